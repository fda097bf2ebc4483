"""The cluster as a whole: its config document, its names, its address plan."""
