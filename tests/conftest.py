"""Shared test helpers. Unit tests (tests/unit) need no root; kernel tests (tests/kernel) create
their own clusters with unique names and remove them by name in fixtures."""
