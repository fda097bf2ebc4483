"""kubewire.controllers"""
