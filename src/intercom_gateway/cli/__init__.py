"""The intercom-gateway command line, grouped by who uses it."""
