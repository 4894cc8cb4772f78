"""The published contract: JSON schemas and the AsyncAPI document."""
