"""Ingress planners: pure, from Ingress/Service/EndpointSlice/Secret objects to nginx.conf and load balancer rules."""
