"""Runs the checks: the runner (deadlines), the scheduler (cycles), the snapshot, the outbox, shard leases."""
