"""Analysis jobs: the durable job queue (claim, heartbeat, finish, retry) and the worker's job loop."""
