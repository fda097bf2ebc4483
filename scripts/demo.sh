#!/usr/bin/env bash
# The main job: install, bring up the built-in demo cluster, and send a request along the whole path.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
KW=.venv/bin/kubewire
export KUBEWIRE_CLUSTER="${KUBEWIRE_CLUSTER:-kubewire}"

$KW up
$KW get nodes -o wide
$KW get pods,services,endpointslices -n production -o wide

gw=$($KW get pods -n production -l app=api-gateway -o name | head -1 | cut -d/ -f2)
vip=$($KW get service payment-service -n production -o json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["spec"]["clusterIP"])')
echo
echo "# api-gateway -> payment-service ClusterIP $vip:8080 (kube-proxy DNAT on the client's node) -> a payment-processor pod:"
$KW curl --from "production/$gw" "http://$vip:8080/v1/payments"
echo
echo "# the same request with curl's timings, and which pod answered from which node and zone:"
$KW curl --from "production/$gw" "http://$vip:8080/v1/payments" -o json
echo
node=$($KW get pod "$gw" -n production -o json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["spec"]["nodeName"])')
echo "# the rules kube-proxy wrote on $node for payment-service:"
$KW rules --node "$node" -t nat | grep 'payment-service' || true
echo
echo "# the seed's north-south path, its manifests applied unmodified (plus the policy that admits the ingress pods):"
echo "#   internet client -> DNS -> cloud LB (203.0.113.x) -> NodePort -> ingress-nginx (TLS) -> payment-service -> pod"
$KW apply -f src/kubewire/manifests/seed
for i in $(seq 1 50); do
  $KW curl https://api.codesprintpro.com/v1/payments -o json --max-time 2 >/tmp/kubewire-demo.json 2>/dev/null && break
  sleep 0.2
done
cat /tmp/kubewire-demo.json
echo
echo "Cluster '$KUBEWIRE_CLUSTER' is still up: try '$KW get pods -A -o wide', '$KW exec -n production $gw -- ip route'."
echo "Remove it with: $KW down"
