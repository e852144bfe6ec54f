"""Everything streamguard does with Redis: the event sink (pub/sub plus a durable
Stream, buffered while Redis is away), the embedded redis-server for `demo`, `run`
without `--redis-url` and tests, the channel subscriber, and the `subscribe`/`replay`
commands."""
