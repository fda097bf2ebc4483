"""kubewire.store"""
from kubewire.store.db import Store, Conflict  # noqa: F401
