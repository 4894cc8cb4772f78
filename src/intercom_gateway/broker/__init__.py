"""Mosquitto for development and tests: configuration, accounts, ACL, TLS, plugin."""
