"""The kernel-adapter layer: the only code that talks to the kernel or starts programs.

Everything above it plans (pure) and calls down here to apply. Enforced by import-linter
(see .importlinter): no other package may import subprocess or pyroute2.
"""
