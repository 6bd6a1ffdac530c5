"""Training plumbing shared by every task: config logging, fault handling."""
