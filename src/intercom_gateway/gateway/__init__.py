"""The gateway process: load, subscribe, check, decide, plan, send and record, ack."""
