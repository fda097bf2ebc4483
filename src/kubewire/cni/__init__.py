"""kubewire.cni"""
