"""kubewire: the Kubernetes networking datapath, built for real in Linux network namespaces."""

__version__ = "0.1.0"
