"""kube-proxy's nftables mode: a pure planner producing upstream's `nft -f` transactions."""

from kubewire.proxy.nftables.render import (
    NftParams,
    NftState,
    SyncPlan,
    Tx,
    changed_services,
    endpoint_chain_base,
    hash_and_truncate,
    nft_params,
    plan_service_port,
    plan_sync,
    render_full,
    service_cidrs_from_objects,
    service_port_chain_base,
)

__all__ = [
    "NftParams",
    "NftState",
    "SyncPlan",
    "Tx",
    "changed_services",
    "endpoint_chain_base",
    "hash_and_truncate",
    "nft_params",
    "plan_service_port",
    "plan_sync",
    "render_full",
    "service_cidrs_from_objects",
    "service_port_chain_base",
]
