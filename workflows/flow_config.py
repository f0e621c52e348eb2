"""The config of each stage flow from its parameters, checked without Prefect or Ray.

A flow's config is its preset, then its YAML file, then its ``--set`` overrides, then its own
parameters (``subjects=``, ``steps=`` ...), each of which overrides one config field. This module
imports neither Prefect nor Ray, so that the ``rodin`` command builds and checks exactly the config
the flow will build (and whether a local Ray can start the training workers) before it starts
either of them; the flows call the same functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rodin_core.config import ConfigError, RodinConfig, load_config

RENDER_FIELDS = {
    "subjects": "corpus.subjects", "seed": "corpus.seed", "shard_size": "corpus.shard_size",
    "asset_dir": "corpus.asset_dir", "views": "render.views", "resolution": "render.resolution",
}
"""Parameters of ``render-avatars`` that override one config field each."""
FIT_FIELDS = {"shared_subjects": "fit.shared_subjects", "steps": "fit.steps", "target_psnr": "fit.target_psnr"}
"""Parameters of ``fit-triplanes`` that override one config field each."""


def build_config(preset: str, config_file: str | None, overrides: list[str] | None,
                 parameter_fields: Mapping[str, str], **fields: Any) -> RodinConfig:
    """Preset, then YAML file, then ``overrides``, then the flow's own parameters (``subjects=`` ...).

    ``parameter_fields`` maps each flow parameter to the config field it overrides; a parameter
    that is None leaves its field alone. Raises :class:`~rodin_core.config.ConfigError` naming any
    bad key or value.
    """
    unknown = sorted(set(fields) - set(parameter_fields))
    if unknown:
        raise TypeError(f"unknown config parameters {unknown}; valid ones: {sorted(parameter_fields)}")
    extra = [f"{parameter_fields[name]}={json.dumps(value)}" for name, value in fields.items() if value is not None]
    return load_config(preset, config_file, [*(overrides or []), *extra])


def training_config(preset: str, config_file: str | None, overrides: list[str] | None, stages: tuple[str, ...],
                    steps: int | None, workers: int | None) -> RodinConfig:
    """Preset, YAML file, ``overrides``, then ``steps``/``workers`` for every stage in ``stages``."""
    extra = [f"{stage}.train.{name}={value}" for stage in stages
             for name, value in (("steps", steps), ("workers", workers)) if value is not None]
    return load_config(preset, config_file, [*(overrides or []), *extra])


def text_embedding_config(preset: str, config_file: str | None, overrides: list[str] | None,
                          steps: int | None) -> RodinConfig:
    """Preset, YAML file, ``overrides``, then ``steps`` of the text embedding (``text_embedding.train.steps``)."""
    extra = [] if steps is None else [f"text_embedding.train.steps={steps}"]
    return load_config(preset, config_file, [*(overrides or []), *extra])


def text_prior_config(preset: str, config_file: str | None, overrides: list[str] | None, steps: int | None,
                      workers: int | None) -> RodinConfig:
    """The text prior's training config (:func:`training_config` of ``text_prior``); a ConfigError when its encoder
    has no text tower (``encoder.kind=learned``), naming what to train."""
    from rodin_core.stage_specs import TEXT_PRIOR
    from rodin_core.text.towers import TEXT_REMEDY

    cfg = training_config(preset, config_file, overrides, (TEXT_PRIOR,), steps, workers)
    if cfg.encoder.kind == "learned":
        raise ConfigError("encoder.kind='learned' has no text tower, so there is no text to condition the text prior "
                          f"on; {TEXT_REMEDY}")
    return cfg


SIDE_BY_SIDE_MIN_CPUS = 8
"""``train-all`` trains the base model and the upsampler side by side on a node with at least this many CPUs,
and one after the other, each with every CPU, on a smaller one. Side by side on 2 cores, each stage had one
core and the tiny upsampler finished in 2.5 min, leaving its core idle for the 9 min the base still ran;
one after the other, each stage uses both cores (torch's intra-op threads scale almost linearly to a few
cores on these networks, not to tens)."""


def side_by_side(cpus: int) -> bool:
    """Whether ``train-all`` trains the base model and the upsampler side by side on a node of ``cpus`` CPUs."""
    return cpus >= SIDE_BY_SIDE_MIN_CPUS


def check_local_capacity(cfg: RodinConfig, stages: tuple[str, ...], cpus: int, gpus: int,
                         cpus_per_worker: int | None = None) -> None:
    """Refuse training workers a local Ray of ``cpus`` CPUs and ``gpus`` GPUs can never start all at once.

    Every worker takes ``cpus_per_worker`` CPUs (at least 1) and, with ``use_gpu``, one GPU; the
    base and upsampler of ``train-all`` run side by side on a node of :data:`SIDE_BY_SIDE_MIN_CPUS`
    CPUs or more (else one after the other), the prior after them. Raises
    :class:`~rodin_core.config.ConfigError` naming the keys, what they need and what there is.
    """
    per = max(1, cpus_per_worker or 1)
    together = [s for s in stages if s != "prior"]
    groups = [together] if side_by_side(cpus) and together else [[s] for s in together]
    for group in groups + ([["prior"]] if "prior" in stages else []):
        trains = {stage: getattr(cfg, stage).train for stage in group}
        keys = " + ".join(f"{stage}.train.workers={train.workers}" for stage, train in trains.items())
        workers = sum(train.workers for train in trains.values())
        side, verb = (" (side by side)", "need") if len(group) > 1 else ("", "needs")
        if workers * per > cpus:
            each = f" x {per} CPUs (--cpus-per-worker)" if per > 1 else ""
            raise ConfigError(f"{keys}{side}{each} {verb} {workers * per} CPUs, this machine has {cpus}; lower "
                              "the workers (--workers) or pass --ray-address of a larger Ray cluster")
        gpu_workers = sum(train.workers for train in trains.values() if train.use_gpu)
        if gpu_workers > gpus:
            raise ConfigError(f"{keys}{side} with use_gpu {verb} {gpu_workers} GPUs, this machine has {gpus}; lower "
                              "the workers (--workers) or pass --ray-address of a Ray cluster with GPUs")
