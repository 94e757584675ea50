"""The team layer: messages between roles and humans, approvals, budgets, circuit breakers, skills."""
