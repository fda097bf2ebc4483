"""kubewire.api"""
