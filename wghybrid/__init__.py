"""wghybrid: run each WireGuard tunnel vanilla (parallel crypt workers) or inline (one core)."""

__version__ = "0.1.0"
