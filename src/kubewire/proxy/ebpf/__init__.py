"""eBPF socket-level load balancing (kube-proxy replacement in the spirit of Cilium's): the
programs, assembled in Python, and the planner of their maps' contents. Pure: no kernel access."""
