"""kube-proxy: one per node, programming that node's namespace from Services and EndpointSlices."""
