"""NetworkPolicy planners: pure, from policies, pods and namespaces to the exact rules."""
