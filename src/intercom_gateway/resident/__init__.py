"""The resident's side: section 8 requests, API tokens and the HTTP API."""
