"""Errors of the data layer: an input a stage reads from the store is missing or unusable.

Every message names the URI and the command that creates or repairs what is missing.
"""

from __future__ import annotations


class StageInputError(RuntimeError):
    """An input of a stage is missing or unusable; the message names the URI and the command to run."""


class FitDataError(StageInputError):
    """Renders or a committed decoder cannot be used for fitting; the message says what to do."""


class TrainDataError(StageInputError):
    """An input of the training stages is missing; the message names the URI and the command to run."""


class CorruptInputError(StageInputError):
    """A committed file a stage reads differs from its manifest (size, sha256); the message names the file,
    its shard and the command that re-creates it."""


class DatasetError(TrainDataError, ValueError):
    """The training data (tri-planes, frontals) is missing or inconsistent; the message names the URI and what to run."""
