"""kubewire.kubelet"""
