"""kubewire.daemon: the control loop and the cluster's lifecycle."""

# The control loop's garbage-collector thresholds (see loop.Daemon.run); the benches that time an
# agent's sync outside the loop use the same, so they measure what the loop does.
GC_THRESHOLDS = (10_000, 10, 10)
