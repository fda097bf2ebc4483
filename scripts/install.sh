#!/usr/bin/env bash
# Installs everything kubewire needs on a fresh Debian machine (as root): Debian packages and a venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(iproute2 iptables nftables conntrack nfacct curl dnsutils util-linux procps iputils-ping nginx-light iperf3 dnsperf unbound wrk python3 python3-venv)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # unbound is a benchmark reference started by kubewire in its own namespaces, never a system service
  if command -v systemctl >/dev/null && systemctl is-active --quiet unbound 2>/dev/null; then
    systemctl disable --now unbound >/dev/null 2>&1 || true
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import kubewire, typer, pyroute2, dns, h2, yaml, pytest, importlinter" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch .venv/.installed
fi
