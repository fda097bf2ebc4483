"""kubewire.topology"""
