"""The bus seam: one Bus protocol, the production MQTT transport and the in-memory bus."""
