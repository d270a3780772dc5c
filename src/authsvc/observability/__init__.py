"""Metrics and structured logs: how an operator watches the service."""
