"""streamguard on a Ray cluster: shards that carry a share of the streams, and where their model runs.

Nothing here is imported by a single-host `streamguard run`: Ray is an optional dependency
(the `cluster` extra), loaded only when a cluster is asked for.
"""
