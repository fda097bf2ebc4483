"""North-south agents: the cloud load balancer and the ingress controller, driven by the control loop."""
