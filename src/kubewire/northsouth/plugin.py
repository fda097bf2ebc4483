"""The north-south agents the control loop runs (kubewire.daemon.loop.edge_agents): the cloud load
balancer first (it allocates the addresses the ingress controller publishes), then ingress-nginx."""

from __future__ import annotations

from kubewire.northsouth.cloudlb import CloudLB
from kubewire.northsouth.controller import IngressController


def make(ctx) -> list:  # noqa: ANN001 - kubewire.daemon.loop.EdgeContext
    return [CloudLB(ctx), IngressController(ctx)]
