"""The refiner's data (paper §3.3, Fig. 8): renders of fitted tri-planes paired with high-resolution corpus renders.

A pair is one view of one subject: the input is the volume render of the subject's FITTED tri-plane
at the corpus render resolution (colour, opacity, depth: :func:`~rodin_core.networks.refiner.refiner_inputs`),
the target the corpus render of the same camera at 2x or 4x that side (``rodin render --resolution``),
composited over the fitting background. The two corpora must hold the same subjects (same recipes);
the high-resolution one may use another rig (e.g. fewer ``--views``): the fitted planes are rendered
from its cameras.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import safetensors.torch
import torch
from torch import Tensor
from tqdm.auto import tqdm

from rodin_core.config import RodinConfig
from rodin_core.datasets.errors import StageInputError
from rodin_core.datasets.layout import RENDERS_STAGE, SUBJECTS_TABLE, VIEWS_TABLE
from rodin_core.datasets.renders import RenderedView, decode_view_row, renders_index
from rodin_core.networks.refiner import REFINER_SCALES, refiner_inputs
from rodin_core.rendering.renderer import RenderSettings, render_layers
from rodin_core.storage import StageStore, open_store
from rodin_core.triplane.field import TriplaneDecoder


class RefinerDataError(StageInputError):
    """The two corpora cannot make refiner pairs; the message names the root, subject or view and what to do."""


@dataclass
class RefinerPairs:
    """Pairs of the refiner, on the CPU."""

    inputs: Tensor
    """(N, 5, h, w) float32 from :func:`refiner_inputs`."""
    targets: Tensor
    """(N, 3, H, W) float32 in [0, 1], H = scale h."""
    subjects: Tensor
    """(N,) int64 subject id of each pair."""
    views: Tensor
    """(N,) int64 view index of each pair."""

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def scale(self) -> int:
        return int(self.targets.shape[-1] // self.inputs.shape[-1])

    def select(self, subject_ids: Sequence[int]) -> RefinerPairs:
        """The pairs of ``subject_ids``."""
        keep = torch.isin(self.subjects, torch.as_tensor(list(subject_ids), dtype=torch.int64))
        return RefinerPairs(self.inputs[keep], self.targets[keep], self.subjects[keep], self.views[keep])


def render_side(stage: StageStore) -> int:
    """The image side of a committed renders stage (from its manifests); one side for every shard."""
    sides = {stage.read_manifest(shard).extra.get("resolution") for shard in stage.committed_shards()}
    if not sides:
        raise RefinerDataError(f"no committed renders shard under {stage.uri}; render the corpus first with "
                               f"`rodin render --out {stage.store.uri}`")
    if len(sides) != 1 or None in sides:
        raise RefinerDataError(f"the renders shards under {stage.uri} have image sides {sorted(map(str, sides))}, "
                               "not one; re-render the corpus at one --resolution")
    return int(sides.pop())


def pair_scale(low_side: int, high_side: int, low_uri: str, high_uri: str) -> int:
    """The refiner's up-sampling factor between two corpora; :class:`RefinerDataError` unless it is 2 or 4."""
    if high_side % low_side or high_side // low_side not in REFINER_SCALES:
        raise RefinerDataError(f"the high-resolution renders at {high_uri} are {high_side} px, the fitted corpus "
                               f"{low_uri} {low_side} px: the refiner up-samples by "
                               f"{' or '.join(map(str, REFINER_SCALES))}; render them with `rodin render "
                               f"--resolution {2 * low_side}` (or {4 * low_side})")
    return high_side // low_side


def _recipes(stage: StageStore) -> dict[int, str]:
    recipes = {}
    for shard in stage.committed_shards():
        table = stage.read_table(shard, SUBJECTS_TABLE, columns=["subject_id", "recipe_json"]).to_pydict()
        recipes.update(zip(table["subject_id"], table["recipe_json"], strict=True))
    return recipes


def high_resolution_subjects(high: str, storage_options: dict | None = None) -> list[int]:
    """Sorted ids of the subjects of the committed renders of ``high`` (reads manifests only)."""
    return sorted(renders_index(open_store(high, storage_options).stage(RENDERS_STAGE)))


def check_same_subjects(low: StageStore, high: StageStore, subject_ids: Sequence[int]) -> None:
    """Refuse subjects missing from ``high`` or built from another recipe there (another corpus seed or preset)."""
    low_recipes, high_recipes = _recipes(low), _recipes(high)
    missing = [s for s in subject_ids if s not in high_recipes]
    if missing:
        raise RefinerDataError(f"subjects {missing} are not in the high-resolution renders at {high.uri}; render "
                               f"them with `rodin render --subjects {max(missing) + 1} --resolution <side> --out "
                               f"{high.store.uri}` and the preset and seed of the fitted corpus")
    other = [s for s in subject_ids if low_recipes.get(s) != high_recipes[s]]
    if other:
        raise RefinerDataError(f"subjects {other} of {high.uri} were built from other recipes than in {low.uri}; "
                               "render the high-resolution corpus with the fitted corpus's preset and corpus.seed")


def _subject_views(table: pa.Table, subject_id: int) -> list[RenderedView]:
    rows = table.filter(pc.equal(table["subject_id"], subject_id)).to_pylist()
    return sorted((decode_view_row(row) for row in rows), key=lambda v: v.view_index)


def inputs_digest(planes: Tensor, decoder: TriplaneDecoder, c2w: np.ndarray, intrinsics: np.ndarray, side: int,
                  settings: RenderSettings, background: float, camera_radius: float) -> str:
    """sha256 of everything :func:`render_inputs` depends on (planes, decoder weights, cameras, side, settings)."""
    digest = hashlib.sha256()
    for tensor in (planes, *decoder.state_dict().values()):
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    for array in (c2w, intrinsics):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    digest.update(repr((side, settings.coarse_samples, settings.fine_samples, settings.bound, float(background),
                        float(camera_radius))).encode())
    return digest.hexdigest()


def render_inputs(planes: Tensor, decoder: TriplaneDecoder, c2w: np.ndarray, intrinsics: np.ndarray, side: int,
                  settings: RenderSettings, background: float, camera_radius: float,
                  cache: str | Path | None = None) -> Tensor:
    """Refiner inputs of one tri-plane (3, C, H, W) seen from N cameras (c2w (N, 4, 4), K (N, 3, 3)) -> (N, 5, side, side).

    ``cache``: a local folder keeping each result as ``<digest>.safetensors`` (:func:`inputs_digest`), so that
    a second training or an evaluation of the same planes and cameras does not render them again.
    """
    path = None
    if cache is not None:
        path = Path(cache) / f"{inputs_digest(planes, decoder, c2w, intrinsics, side, settings, background, camera_radius)}.safetensors"
        if path.is_file():
            return safetensors.torch.load_file(path)["inputs"]
    batch = planes[None].float()
    rows = []
    for pose, matrix in zip(c2w, intrinsics, strict=True):
        rgb, opacity, depth = render_layers(batch, decoder, torch.as_tensor(pose), torch.as_tensor(matrix), side,
                                            side, settings, background)
        rows.append(refiner_inputs(rgb.permute(2, 0, 1)[None], opacity[None], depth[None], camera_radius))
    inputs = torch.cat(rows).cpu()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        safetensors.torch.save_file({"inputs": inputs.contiguous()}, temp)
        temp.replace(path)
    return inputs


def low_intrinsics(intrinsics: np.ndarray, scale: int) -> np.ndarray:
    """Pinhole matrices (..., 3, 3) of images ``scale`` times smaller, with the same pixel-centre convention."""
    low = np.array(intrinsics, dtype=np.float64)
    low[..., :2, :] /= scale
    return low


def iter_pairs(cfg: RodinConfig, renders: str, high: str, planes: dict[int, Tensor], decoder: TriplaneDecoder,
               settings: RenderSettings, storage_options: dict | None = None, progress: bool = False,
               cache: str | Path | None = None) -> Iterator[RefinerPairs]:
    """The pairs of each subject of ``planes`` (subject id -> fitted planes (3, C, H, W)), one subject at a time.

    ``renders``: the corpus the planes were fitted to (its image side is the refiner's input side);
    ``high``: the same subjects rendered at 2x or 4x that side, from any rig: each of its views is
    paired with the render of the fitted planes from the same camera at the input side. ``cache``: see
    :func:`render_inputs`.
    """
    low_stage = open_store(renders, storage_options).stage(RENDERS_STAGE)
    high_stage = open_store(high, storage_options).stage(RENDERS_STAGE)
    low_side = render_side(low_stage)
    scale = pair_scale(low_side, render_side(high_stage), low_stage.uri, high_stage.uri)
    ids = sorted(planes)
    check_same_subjects(low_stage, high_stage, ids)
    high_index = renders_index(high_stage)
    table: tuple[str, pa.Table | None] = ("", None)  # the last read shard: subjects come in id order
    for subject in tqdm(ids, desc="refiner pairs", disable=not progress, leave=False):
        shard = high_index[subject].shard_id
        if table[0] != shard:
            table = (shard, high_stage.read_table(shard, VIEWS_TABLE))
        views = _subject_views(table[1], subject)
        c2w = np.stack([view.c2w for view in views])  # (V, 4, 4)
        intrinsics = low_intrinsics(np.stack([view.intrinsics for view in views]), scale)  # (V, 3, 3)
        inputs = render_inputs(planes[subject], decoder, c2w, intrinsics, low_side, settings, cfg.fit.background,
                               cfg.render.camera_radius, cache)
        rgba = torch.from_numpy(np.stack([view.rgba for view in views])).float() / 255.0  # (V, H, W, 4)
        alpha = rgba[..., 3:]
        targets = (rgba[..., :3] * alpha + cfg.fit.background * (1.0 - alpha)).permute(0, 3, 1, 2).contiguous()
        yield RefinerPairs(inputs, targets, torch.full((len(views),), subject, dtype=torch.int64),
                           torch.as_tensor([view.view_index for view in views], dtype=torch.int64))


def concat_pairs(parts: Sequence[RefinerPairs]) -> RefinerPairs:
    """One :class:`RefinerPairs` of several."""
    if not parts:
        raise RefinerDataError("no refiner pairs: no fitted subject was selected")
    return RefinerPairs(*(torch.cat([getattr(p, name) for p in parts])
                          for name in ("inputs", "targets", "subjects", "views")))
