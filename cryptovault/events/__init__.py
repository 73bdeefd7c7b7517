"""Side channel for events: the bus carries messages between instances (in-process or
Redis pub/sub); the hub fans them out to this instance's subscribers."""
