"""The error every generation entry point raises for bad input (paper §4.2, §4.5)."""

from __future__ import annotations


class GenerationError(ValueError):
    """Wrong preset, incompatible checkpoints or decoder, bad options or input; the message says what to do."""
