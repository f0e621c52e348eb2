"""Prefect flows of the Rodin pipeline and their Ray glue (docs/architecture.md).

Thin: each flow builds a config, plans shards and hands the work to ``render`` and ``rodin_core``.
"""
