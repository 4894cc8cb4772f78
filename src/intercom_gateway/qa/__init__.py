"""QA tooling: the broker/gateway runner, pytest plugin, scenarios, load and demo."""
