"""The processes and their wiring: the node (`serve`), the worker process, scheduler loops, instance
ownership, retry policy, preflight checks, optional extras, logging and the audit log."""
