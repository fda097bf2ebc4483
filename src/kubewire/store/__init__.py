"""kubewire.store"""
from kubewire.store.db import Conflict, Store  # noqa: F401
