"""Redis Streams in, market feed, signal engine."""
