"""The durable queue, the worker, the pipeline steps, retry schedule and throttling."""
