#!/usr/bin/env bash
# The main job: install, bring up the built-in demo cluster, and send a request along the whole path.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
KW=.venv/bin/kubewire
export KUBEWIRE_CLUSTER="${KUBEWIRE_CLUSTER:-kubewire}"

$KW up
$KW get nodes -o wide
$KW get pods -n production -o wide

gw=$($KW get pods -n production -l app=api-gateway -o name | head -1 | cut -d/ -f2)
target=$($KW get pods -n production -l app=payment-processor -o json \
  | .venv/bin/python -c 'import json,sys; ps=json.load(sys.stdin)["items"]; print(ps[0]["status"]["podIP"])')
echo
echo "# api-gateway -> payment-processor pod, across the node network (pod IP, direct routing):"
$KW curl --from "production/$gw" "http://$target:8080/v1/payments"
echo
echo "# the same path, with curl's timings (-o json):"
$KW curl --from "production/$gw" "http://$target:8080/v1/payments" -o json
echo
echo "Cluster '$KUBEWIRE_CLUSTER' is still up: try '$KW get pods -A', '$KW exec -n production $gw -- ip route'."
echo "Remove it with: $KW down"
