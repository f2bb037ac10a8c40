"""Model references (hub ids or local folders) and the offline tiny models for tests and the demo."""
