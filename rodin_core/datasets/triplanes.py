"""Streaming tri-plane dataset over the fitting stage's committed shards (paper §3.2, §3.3, appendix B.1).

The diffusion stages train on every fitted subject's tri-plane (3, C, H, W) and, for the latent
conditioning of §3.2, on the subject's frontal view (view 0). The corpus (100K subjects in the paper)
never fits in memory, so :class:`TriplaneDataset` reads one committed ``triplanes/`` shard at a time,
joins the aligned ``frontals/`` shard by subject id, skips subjects whose fit failed, and mixes
subjects of consecutive shards through a shuffle buffer. Each epoch visits every subject of this
reader's partition exactly once, in an order drawn from ``seed + epoch``; epochs repeat forever.

Held-out subjects (paper §4.5, appendix C.5 Table 4): every reader takes ``held_out_from``, the
smallest held-out subject id (:attr:`rodin_core.config.CorpusConfig.first_held_out`), and never
yields a subject whose id is at or above it; shards holding only held-out subjects are left out of
the plan. ``None`` reads every fitted subject.

Partitioning: with R readers (Ray Train ranks x DataLoader workers), reader r takes the sorted
shards ``shards[r::R]``; when there are fewer shards than readers it reads every shard and keeps the
subjects at positions ``r::R`` of the sorted subject list instead. Partitions are disjoint and
together cover the corpus.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from rodin_core.config import CorpusConfig
from rodin_core.datasets.errors import DatasetError, TrainDataError
from rodin_core.datasets.integrity import (
    corrupt_inputs,
    id_ranges,
    missing_subjects,
    shared_subjects,
)
from rodin_core.datasets.layout import (
    FRONTALS_FILE,
    FRONTALS_STAGE,
    PLANES_FILE,
    RECORDS_FILE,
    TRIPLANES_STAGE,
)
from rodin_core.datasets.triplane_records import planes_from_safetensors
from rodin_core.imaging import decode_png
from rodin_core.storage import StageStore, open_store

log = logging.getLogger(__name__)

FRONTALS_SCHEMA = pa.schema([
    pa.field("subject_id", pa.int64(), nullable=False),
    pa.field("png", pa.binary(), nullable=False),
])
"""``frontals.parquet``: view 0 of each subject, RGBA 8-bit PNG at the render resolution."""


@dataclass
class TriplaneSample:
    """One training subject."""

    subject_id: int
    planes: Tensor
    """(3, C, H, W) float32, raw (not normalised)."""
    frontal: Tensor
    """(4, Hi, Wi) float32 RGBA in [0, 1], straight alpha."""


@dataclass
class TriplaneBatch:
    """A batch of :class:`TriplaneSample`."""

    subject_ids: Tensor
    """(B,) int64."""
    planes: Tensor
    """(B, 3, C, H, W) float32, raw."""
    frontal: Tensor
    """(B, 4, Hi, Wi) float32 in [0, 1]."""

    def to(self, device: torch.device | str) -> TriplaneBatch:
        """The batch on ``device``."""
        return TriplaneBatch(self.subject_ids.to(device), self.planes.to(device), self.frontal.to(device))

    def __len__(self) -> int:
        return int(self.subject_ids.shape[0])


def collate_samples(samples: Sequence[TriplaneSample]) -> TriplaneBatch:
    """Stack samples into a :class:`TriplaneBatch` (the ``collate_fn`` of a DataLoader)."""
    if not samples:
        raise DatasetError("collate_samples got no samples; the batch size must be at least 1")
    shapes = {(tuple(s.planes.shape), tuple(s.frontal.shape)) for s in samples}
    if len(shapes) != 1:
        raise DatasetError(f"samples of one batch must share plane and frontal shapes, got {sorted(shapes)}; "
                           "fit and render the corpus with one config")
    return TriplaneBatch(
        subject_ids=torch.tensor([s.subject_id for s in samples], dtype=torch.int64),  # (B,)
        planes=torch.stack([s.planes for s in samples]),  # (B, 3, C, H, W)
        frontal=torch.stack([s.frontal for s in samples]),  # (B, 4, Hi, Wi)
    )


def frontal_tensor(png: bytes) -> Tensor:
    """PNG bytes -> (4, Hi, Wi) float32 RGBA in [0, 1] (opaque alpha added to RGB images)."""
    image = decode_png(png)  # (Hi, Wi, 3|4) uint8
    if image.shape[2] == 3:
        image = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)  # (Hi, Wi, 4)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0  # (4, Hi, Wi)


def is_training_subject(subject_id: int, held_out_from: int | None) -> bool:
    """Whether training may read ``subject_id``: held-out subjects have ids >= ``held_out_from`` (§4.5)."""
    return held_out_from is None or subject_id < held_out_from


def _good_subjects(stage: StageStore, shard_id: str, held_out_from: int | None = None) -> list[int]:
    """Sorted ids of the shard's training subjects whose fit succeeded (``error`` is null)."""
    table = stage.read_table(shard_id, RECORDS_FILE, columns=["subject_id", "error"]).to_pydict()
    return sorted(int(s) for s, e in zip(table["subject_id"], table["error"], strict=True)
                  if e is None and is_training_subject(int(s), held_out_from))


def subject_ids(out_uri: str, storage_options: dict | None = None, held_out_from: int | None = None) -> list[int]:
    """Sorted ids of every successfully fitted training subject of the committed tri-plane shards.

    ``held_out_from``: the smallest held-out subject id (``CorpusConfig.first_held_out``); None keeps all.
    """
    stage, shards = committed_triplane_shards(out_uri, storage_options)
    return sorted(s for shard in shards for s in _good_subjects(stage, shard, held_out_from))


def iter_planes(out_uri: str, storage_options: dict | None = None, shard_ids: Sequence[str] | None = None,
                held_out_from: int | None = None) -> Iterator[tuple[int, Tensor]]:
    """Stream ``(subject_id, planes (3, C, H, W) float32)`` shard by shard, failed and held-out subjects skipped.

    Feeds :func:`rodin_core.triplane.stats.compute_plane_stats` without loading the corpus.
    """
    stage, shards = committed_triplane_shards(out_uri, storage_options)
    for shard in shards if shard_ids is None else shard_ids:
        with corrupt_inputs():
            good = set(_good_subjects(stage, shard, held_out_from))
            planes = planes_from_safetensors(stage.read_bytes(shard, PLANES_FILE)) if good else {}
        for subject, tensor in planes.items():
            if subject in good:
                yield subject, tensor.float()


class TriplaneDataset(IterableDataset):
    """Infinite, shuffled stream of :class:`TriplaneSample` read shard by shard from ``out_uri``.

    ``held_out_from``: the smallest held-out subject id (``CorpusConfig.first_held_out``); subjects at or
    above it are never yielded (§4.5, appendix C.5). None yields every fitted subject.
    """

    def __init__(
        self,
        out_uri: str,
        storage_options: dict | None = None,
        shard_ids: Sequence[str] | None = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 256,
        held_out_from: int | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise DatasetError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if shuffle_buffer < 1:
            raise DatasetError(f"shuffle_buffer must be at least 1 (1 = no shuffling within shards), got {shuffle_buffer}")
        self.out_uri = out_uri
        self.storage_options = storage_options
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle_buffer = seed, shuffle_buffer
        self.held_out_from = held_out_from
        stage, committed = committed_triplane_shards(out_uri, storage_options)
        if shard_ids is not None:
            unknown = sorted(set(shard_ids) - set(committed))
            if unknown:
                raise DatasetError(f"shards {unknown} are not committed in {stage.uri}; committed: {committed[:10]}"
                                   f"{' ...' if len(committed) > 10 else ''}")
        shards = sorted(committed if shard_ids is None else shard_ids)
        if held_out_from is not None:  # reads the manifests only
            shards = [shard for shard in shards
                      if any(is_training_subject(s, held_out_from) for s in stage.read_manifest(shard).subject_ids)]
        self.shard_ids = shards
        if not self.shard_ids:
            raise DatasetError(f"every committed tri-plane shard of {out_uri} holds only held-out subjects (ids >= "
                               f"{held_out_from}, corpus.holdout_subjects); lower corpus.holdout_subjects or fit "
                               "more subjects")

    def _reader(self) -> tuple[int, int]:
        """(index, count) of this reader among all ranks x DataLoader workers."""
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        return self.rank * workers + worker, self.world_size * workers

    def _plan(self, reader: int, readers: int) -> tuple[list[str], set[int] | None]:
        """This reader's shards, and its subjects when shards are split by subject."""
        if len(self.shard_ids) >= readers:
            return self.shard_ids[reader::readers], None
        stage = open_store(self.out_uri, self.storage_options).stage(TRIPLANES_STAGE)
        everyone = sorted(s for shard in self.shard_ids for s in _good_subjects(stage, shard, self.held_out_from))
        return list(self.shard_ids), set(everyone[reader::readers])

    def _load_shard(self, shard_id: str, keep: set[int] | None) -> list[tuple[int, Tensor, bytes]]:
        with corrupt_inputs():
            return self._read_shard(shard_id, keep)

    def _read_shard(self, shard_id: str, keep: set[int] | None) -> list[tuple[int, Tensor, bytes]]:
        store = open_store(self.out_uri, self.storage_options)
        planes_stage, frontals_stage = store.stage(TRIPLANES_STAGE), store.stage(FRONTALS_STAGE)
        good = set(_good_subjects(planes_stage, shard_id, self.held_out_from))
        if keep is not None:
            good &= keep
        if not good:
            return []
        if not frontals_stage.is_committed(shard_id):
            raise DatasetError(f"{self.out_uri} has tri-plane shard {shard_id!r} but no committed frontals shard "
                               f"({frontals_stage.uri}/manifests/{shard_id}.json); extract the frontal views first: "
                               f"rodin train base --out {self.out_uri} (it runs extract_frontals)")
        table = frontals_stage.read_table(shard_id, FRONTALS_FILE, columns=["subject_id", "png"]).to_pydict()
        frontals = dict(zip(table["subject_id"], table["png"], strict=True))
        planes = planes_from_safetensors(planes_stage.read_bytes(shard_id, PLANES_FILE))
        items = []
        for subject in sorted(good):
            if subject not in planes or subject not in frontals:
                what = "tri-plane" if subject not in planes else "frontal view"
                raise DatasetError(f"subject {subject} of shard {shard_id!r} in {self.out_uri} has no {what} although "
                                   "its fit succeeded; delete that shard's manifest and re-run the stage that wrote it")
            items.append((subject, planes[subject], frontals[subject]))
        return items

    def iter_epoch(self, epoch: int) -> Iterator[TriplaneSample]:
        """One pass over this reader's partition, shuffled with ``seed + epoch``."""
        reader, readers = self._reader()
        shards, keep = self._plan(reader, readers)
        generator = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_003 + reader) % 2**63)
        order = torch.randperm(len(shards), generator=generator).tolist()
        buffer: list[tuple[int, Tensor, bytes]] = []
        for index in order:
            for item in self._load_shard(shards[index], keep):
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(item)
                    continue
                slot = int(torch.randint(len(buffer), (1,), generator=generator))
                yield _sample(buffer[slot])
                buffer[slot] = item
        for slot in torch.randperm(len(buffer), generator=generator).tolist():
            yield _sample(buffer[slot])

    def __iter__(self) -> Iterator[TriplaneSample]:
        reader, readers = self._reader()
        for epoch in itertools.count():
            empty = True
            for sample in self.iter_epoch(epoch):
                empty = False
                yield sample
            if empty:
                raise DatasetError(f"reader {reader} of {readers} (rank {self.rank} of {self.world_size}) got no "
                                   f"subjects from {self.out_uri}; use fewer workers than the "
                                   f"{len(self.shard_ids)} shards' fitted subjects, or fit more subjects")


def _sample(item: tuple[int, Tensor, bytes]) -> TriplaneSample:
    subject, planes, png = item
    return TriplaneSample(subject_id=subject, planes=planes.float(), frontal=frontal_tensor(png))


def committed_triplane_shards(out: str, storage_options: dict | None = None) -> tuple[StageStore, list[str]]:
    """The ``triplanes/`` stage of ``out`` and its committed shard ids (reads every manifest).

    Raises :class:`DatasetError` when there is none, when two shards hold one subject, or when no
    shard holds some id below the largest fitted one (a corpus holds ids 0..N-1).
    """
    stage = open_store(out, storage_options).stage(TRIPLANES_STAGE)
    shards = stage.committed_shards()
    if not shards:
        raise DatasetError(f"no committed tri-planes under {stage.uri}; fit them first: "
                           f"`rodin fit --renders <renders root> --out {out}`")
    subjects = {shard: stage.read_manifest(shard).subject_ids for shard in shards}
    twice = shared_subjects(subjects)
    if twice:
        holding = sorted({shard for owners in twice.values() for shard in owners})
        raise DatasetError(f"tri-plane shards {', '.join(holding)} of {stage.uri} hold the same subjects "
                           f"({id_ranges(twice)}), so training would see them twice: they were fitted by different "
                           f"fitting plans; delete the manifests of those that do not belong ({stage.uri}/manifests/), "
                           f"then re-fit what is missing: `rodin fit --renders <renders root> --out {out}`")
    missing = missing_subjects(s for ids in subjects.values() for s in ids)
    if missing:
        raise DatasetError(f"no committed tri-plane shard of {stage.uri} holds subjects {id_ranges(missing)} (fitted "
                           f"subjects reach id {max(max(ids, default=0) for ids in subjects.values())}); fit them "
                           f"first: `rodin fit --renders <renders root> --out {out}` (`rodin status --out {out} "
                           f"--stage triplanes` shows what failed)")
    return stage, shards


def corpus_digest(out: str, storage_options: dict | None = None) -> dict[str, str]:
    """``{triplanes shard id: committed attempt id}``: the tri-planes the statistics and latents were computed over."""
    stage, shards = committed_triplane_shards(out, storage_options)
    return {shard_id: stage.read_manifest(shard_id).attempt_id for shard_id in shards}


def training_digest(out: str, storage_options: dict | None = None,
                    corpus: CorpusConfig | None = None) -> dict[str, object]:
    """What the statistics and latents are computed over (JSON, hashed into their manifests).

    ``{"triplanes": corpus_digest}``, plus ``"held_out_from"`` (the first held-out subject id, §4.5)
    when ``corpus`` holds subjects out; without held-out subjects the digest is the one computed
    before held-out subjects existed, so such committed statistics and latents stay current.
    """
    digest: dict[str, object] = {"triplanes": corpus_digest(out, storage_options)}
    if corpus is not None and corpus.first_held_out is not None:
        digest["held_out_from"] = corpus.first_held_out
    return digest


def check_holdout(out: str, corpus: CorpusConfig, storage_options: dict | None = None) -> None:
    """Check that ``corpus`` describes the fitted corpus of ``out`` where held-out subjects are concerned.

    Raises :class:`TrainDataError` when subjects are held out but fitted ids reach ``corpus.subjects``
    (the held-out ids would not be the corpus's last ones); warns when no held-out subject is fitted
    (fitting has not reached them, or the corpus was rendered with fewer subjects than ``corpus.subjects``).
    """
    first = corpus.first_held_out
    if first is None:
        return
    stage, shards = committed_triplane_shards(out, storage_options)
    fitted = {s for shard in shards for s in stage.read_manifest(shard).subject_ids}
    beyond = sorted(s for s in fitted if s >= corpus.subjects)
    if beyond:
        raise TrainDataError(f"{out} holds fitted subjects {beyond[:10]} at or above corpus.subjects="
                             f"{corpus.subjects}, so the held-out subjects (corpus.holdout_subjects="
                             f"{corpus.holdout_subjects}: ids {first}..{corpus.subjects - 1}) are not the corpus's "
                             f"last ones; train with the corpus.subjects the corpus was rendered with "
                             f"(e.g. --set corpus.subjects={max(fitted) + 1})")
    if not any(s >= first for s in fitted):
        log.warning("corpus.holdout_subjects=%d holds out ids %d..%d, none of which is fitted in %s (fitted ids "
                    "%d..%d): every fitted subject is trained on. If the corpus was rendered with fewer subjects "
                    "than corpus.subjects=%d, train with the same corpus.subjects", corpus.holdout_subjects, first,
                    corpus.subjects - 1, out, min(fitted), max(fitted), corpus.subjects)
