"""streamguard on a Ray cluster: streams spread over shard actors, with failover, and where their model runs.

shard.py          one Ray actor, one process: the composition root (app.running) on its share of streams
director.py       a detached actor: places streams, keeps stream -> (shard, epoch) in Redis, moves streams off dead shards
driver.py         what `streamguard run --ray` runs: connects, starts the director (and the model service), serves the front door
model_service.py  the shared model: a pool of actors, each an engine behind the micro-batcher, for every shard
remote_engine.py  the shard's side of it: an Engine whose infer is one request to the service
crop_codec.py     how crops cross nodes (raw uint8 or JPEG)
Fencing lives with the sink (streamguard/redis/fence.py). Nothing here is imported by a single-host
`streamguard run`: Ray is an optional dependency (the `cluster` extra), loaded only when `--ray` is given.
"""
