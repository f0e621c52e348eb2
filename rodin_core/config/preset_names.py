"""The names of the presets, importable without torch (the ``rodin`` command lists them before loading a config)."""

PRESETS = ("tiny", "small", "paper")
"""Names of the presets (:mod:`rodin_core.config.presets`), the values of ``RodinConfig.preset``."""
