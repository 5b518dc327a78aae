"""Where decay-audit meets other tools: the pytest plugin and the pre-commit hook."""
