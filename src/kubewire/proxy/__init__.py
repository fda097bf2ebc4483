"""kubewire.proxy"""
