"""kubewire.daemon"""
