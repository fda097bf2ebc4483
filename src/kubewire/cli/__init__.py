"""kubewire.cli"""
