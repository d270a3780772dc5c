"""authsvc: password login, short-lived JWT access tokens and rotating refresh tokens."""

__version__ = "0.1.0"
