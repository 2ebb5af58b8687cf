"""Postway: a self-hosted delivery layer for sales email."""

__version__ = "0.1.0"
