"""The policy core: pure, synchronous rules with no I/O (no asyncio, SQLite or MQTT)."""
