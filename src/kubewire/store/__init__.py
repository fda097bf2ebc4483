"""kubewire.store"""
from kubewire.store.db import Store  # noqa: F401
