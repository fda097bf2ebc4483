"""kube-proxy's iptables mode: a pure planner producing upstream's iptables-restore payload."""

from kubewire.proxy.iptables.render import (
    JumpRule,
    NodeParams,
    Payload,
    ServicePortRules,
    compute_probability,
    endpoint_chain_name,
    jump_rules,
    node_params,
    plan_full,
    plan_service_port,
    render_full,
    service_chain_name,
    service_external_chain_name,
    service_firewall_chain_name,
    service_local_chain_name,
)

__all__ = [
    "JumpRule",
    "NodeParams",
    "Payload",
    "ServicePortRules",
    "compute_probability",
    "endpoint_chain_name",
    "jump_rules",
    "node_params",
    "plan_full",
    "plan_service_port",
    "render_full",
    "service_chain_name",
    "service_external_chain_name",
    "service_firewall_chain_name",
    "service_local_chain_name",
]
