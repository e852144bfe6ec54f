"""`streamguard run --ray`: streams spread over shard actors on a Ray cluster, with failover.

shard.py      one Ray actor, one process: the composition root (app.running) on its share of streams
director.py   a detached actor: places streams, keeps stream -> (shard, epoch) in Redis, moves streams off dead shards
driver.py     what `streamguard run --ray` runs: connects, starts the director, serves the front door
Fencing lives with the sink (streamguard/redis/fence.py). Nothing here is imported unless `--ray` is given.
"""
