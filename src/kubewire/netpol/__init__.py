"""NetworkPolicy enforcement: one agent per node applying the policy planner's rules."""
