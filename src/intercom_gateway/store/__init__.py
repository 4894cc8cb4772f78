"""The durable store behind one small interface (SQLite today)."""
