"""The ``stats/`` stage: the per-channel normalisation statistics of the tri-planes (appendix B.1).

Computed once over the training subjects of the whole corpus (held-out subjects, §4.5, are left
out); every stage and every checkpoint uses them. A corpus fitted further later keeps them, with a
warning, so that the stages stay consistent; statistics of another holdout are refused (the stages
trained on them saw other subjects).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping

from torch import Tensor

from rodin_core.config import CorpusConfig
from rodin_core.datasets.errors import TrainDataError
from rodin_core.datasets.layout import (
    STATS_FILE,
    STATS_JSON,
    STATS_SHARD,
    STATS_STAGE,
)
from rodin_core.datasets.triplanes import (
    check_holdout,
    iter_planes,
    training_digest,
)
from rodin_core.storage import config_hash, open_store
from rodin_core.triplane.stats import PlaneStats, PlaneStatsError, compute_plane_stats

log = logging.getLogger(__name__)


def write_plane_stats(out_uri: str, stats: PlaneStats, storage_options: dict | None = None,
                      config: Mapping | None = None, extra: Mapping | None = None) -> None:
    """Commit ``stats`` as shard ``stats`` of stage ``stats/`` (``stats.safetensors`` + ``stats.json``).

    ``config`` (JSON) is hashed into the manifest's config hash; ``extra`` (JSON) is added to its extra.
    """
    writer = open_store(out_uri, storage_options).stage(STATS_STAGE).begin(STATS_SHARD)
    writer.write_bytes(STATS_FILE, stats.to_bytes())
    writer.write_bytes(STATS_JSON, stats.to_json().encode("utf-8"))
    writer.commit([], config_hash(dict(config or {"channels": stats.channels})),
                  extra={**(extra or {}), "count": stats.count, "channels": stats.channels})


def read_plane_stats(out_uri: str, storage_options: dict | None = None) -> PlaneStats:
    """The committed corpus statistics of ``out_uri``; a clear error when they were never computed."""
    stage = open_store(out_uri, storage_options).stage(STATS_STAGE)
    if not stage.is_committed(STATS_SHARD):
        raise PlaneStatsError(f"{out_uri} has no committed plane statistics ({stage.uri}/manifests/{STATS_SHARD}.json);"
                              " compute them first: rodin train base --out ... (it commits stats/ before training)")
    return PlaneStats.from_bytes(stage.read_bytes(STATS_SHARD, STATS_FILE))


PROGRESS_EVERY = 100
"""Subjects between progress lines of a pass over the corpus."""


def ensure_stats(out: str, storage_options: dict | None = None,
                 corpus: CorpusConfig | None = None) -> tuple[PlaneStats, bool]:
    """The committed normalisation statistics of ``out``, computed and committed first when missing.

    Returns ``(stats, computed)``. ``corpus``: its held-out subjects (§4.5) are left out (None: every
    fitted subject counts). Statistics committed over another set of tri-plane shards are kept
    (every trained stage depends on them) with a warning saying how to recompute them; statistics
    committed with other held-out subjects raise :class:`TrainDataError`.
    """
    held_out_from = corpus.first_held_out if corpus is not None else None
    if corpus is not None:
        check_holdout(out, corpus, storage_options)
    digest = training_digest(out, storage_options, corpus)
    stage = open_store(out, storage_options).stage(STATS_STAGE)
    if stage.is_committed(STATS_SHARD):
        manifest = stage.read_manifest(STATS_SHARD)
        committed_from = manifest.extra.get("held_out_from")
        if committed_from != held_out_from:
            raise TrainDataError(
                f"the plane statistics of {out} were computed {_holdout_words(committed_from)}, but the config "
                f"trains {_holdout_words(held_out_from)} (corpus.holdout_subjects); the stages trained with them "
                f"saw other subjects. Either train with the held-out subjects they were made with, or "
                f"delete {stage.uri}/manifests/{STATS_SHARD}.json and retrain every stage from scratch "
                f"(`rodin train all --out {out} --fresh`)")
        stats = read_plane_stats(out, storage_options)
        if manifest.config_hash != config_hash(digest):
            log.warning("the plane statistics of %s were computed over %d subjects before the tri-planes changed; "
                        "they are kept so that every stage uses the same ones. To recompute them, delete %s/manifests/"
                        "%s.json and retrain every stage", out, stats.count, stage.uri, STATS_SHARD)
        return stats, False
    planes = iter_planes(out, storage_options, list(digest["triplanes"]), held_out_from=held_out_from)
    stats = compute_plane_stats(_logged(planes, "plane statistics"))
    write_plane_stats(out, stats, storage_options, config=digest, extra={"held_out_from": held_out_from})
    log.info("plane statistics of %d subjects committed to %s (mean %s, std %s%s)", stats.count, stage.uri,
             _rounded(stats.mean.tolist()), _rounded(stats.std.tolist()),
             "" if held_out_from is None else f"; subjects from id {held_out_from} held out")
    return stats, True


def _holdout_words(held_out_from: int | None) -> str:
    """``"with no held-out subjects"`` or ``"with subjects from id N held out"``."""
    return "with no held-out subjects" if held_out_from is None else f"with subjects from id {held_out_from} held out"


def _logged(items: Iterator[tuple[int, Tensor]], label: str) -> Iterator[Tensor]:
    """The tensors of ``(subject id, tensor)`` items, with a progress line every 100 subjects and at the end."""
    start, count = time.perf_counter(), 0
    for count, (_, tensor) in enumerate(items, start=1):
        if count % PROGRESS_EVERY == 0:
            log.info("%s: %d subjects read (%.1f s)", label, count, time.perf_counter() - start)
        yield tensor
    log.info("%s: %d subjects read in %.1f s", label, count, time.perf_counter() - start)


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 4) for v in values]

