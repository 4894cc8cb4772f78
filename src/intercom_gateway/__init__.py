"""Apartment-intercom gateway: consent-enforcing MQTT relay and panel simulators."""

__version__ = "0.1.0"
