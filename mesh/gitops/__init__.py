"""GitOps: reconcile environments from git through the Target protocol, and prove each change on the data path."""
