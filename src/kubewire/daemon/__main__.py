"""`python -m kubewire.daemon --name CLUSTER`: the cluster's control loop (started by `kubewire up`)."""

from kubewire.daemon.loop import main

main()
