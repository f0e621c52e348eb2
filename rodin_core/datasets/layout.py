"""The store layout: every stage, shard, file and key-prefix name of a dataset root, defined once.

A dataset root (any fsspec URI) holds one folder per stage; each stage holds shards committed by a
manifest (:mod:`rodin_core.storage`). docs/data-contracts.md describes what each file holds::

    renders/      per shard: views.parquet (one row per view) + subjects.parquet (recipe, caption)
    decoder/      shard "decoder": decoder.safetensors + decoder.json, phase A's planes
    triplanes/    per shard: planes.safetensors (float16, subject_<id>) + records.parquet
    frontals/     per tri-plane shard: frontals.parquet (view 0 of each subject, what encoders read)
    stats/        shard "stats": the per-channel plane statistics
    latents/      shard "latents": z of every training subject (the latent prior's data)
    checkpoints/  one shard per diffusion stage (base, upsampler, prior): the latest checkpoint
    refiner/      shard "refiner": the convolutional refiner, refiner.safetensors + refiner.json
    generated/    one shard per generation request: avatars, turntables, contact sheet
    text_embedding/  shard "avatar_clip": avatar_clip.safetensors + avatar_clip.json (text-image embedding)
    evaluation/   plain files, rewritten by each evaluation: report.json, report.md, samples.png, neighbours.png
"""

from __future__ import annotations

RENDERS_STAGE = "renders"
"""Multi-view renders of the synthetic corpus (paper §4.1, appendix B.2)."""
VIEWS_TABLE = "views.parquet"
"""Renders: one row per view (subject id, view index, RGBA PNG, camera, intrinsics)."""
SUBJECTS_TABLE = "subjects.parquet"
"""Renders: one row per subject (the recipe that built the avatar, its caption, render time)."""

DECODER_STAGE = "decoder"
"""The shared MLP decoder fitted in phase A (paper §3.1, appendix B.2)."""
DECODER_SHARD = "decoder"
"""Shard id of the one committed decoder in the decoder stage."""
DECODER_WEIGHTS = "decoder.safetensors"
"""Decoder weights."""
DECODER_CONFIG = "decoder.json"
"""Decoder config and format version."""
DECODER_WARM_START = "warm_start.safetensors"
"""Mean of phase A's planes, committed with the decoder: where every other phase-B subject starts."""
DECODER_SHARED_PLANES = "shared_planes.safetensors"
"""Phase A's planes (float16, ``subject_<id>``), committed with the decoder: where phase B starts them."""

TRIPLANES_STAGE = "triplanes"
"""Fitted tri-planes (paper §3.1)."""
PLANES_FILE = "planes.safetensors"
"""Tri-planes: one float16 tensor (3, C, H, W) per subject, keyed ``subject_<id>``."""
RECORDS_FILE = "records.parquet"
"""Tri-planes: one row of fitting metrics per subject (held-out PSNR, steps, time)."""

FRONTALS_STAGE = "frontals"
"""View 0 of every fitted subject, copied from the renders (what the encoders read, §3.2)."""
FRONTALS_FILE = "frontals.parquet"
"""Frontals: subject id and RGBA PNG."""

STATS_STAGE = "stats"
"""Per-channel normalisation statistics of the tri-planes (appendix B.1)."""
STATS_SHARD = "stats"
"""The only shard of :data:`STATS_STAGE`."""
STATS_FILE = "stats.safetensors"
"""Statistics: mean and std per channel."""
STATS_JSON = "stats.json"
"""Statistics as JSON, for people."""
STATS_PREFIX = "stats."
"""Key prefix of the plane statistics saved among a checkpoint's extra tensors."""

LATENTS_STAGE = "latents"
"""z of every training subject, the data of the latent prior (appendix B.4)."""
LATENTS_SHARD = "latents"
"""The only shard of :data:`LATENTS_STAGE`."""
LATENTS_FILE = "latents.safetensors"
"""Latents: ``subject_ids`` (N,) and ``z`` (N, D)."""

CHECKPOINTS_STAGE = "checkpoints"
"""The trained stages' latest checkpoints, one shard per stage (base, upsampler, prior, text_prior)."""
RUNS_FOLDER = "runs"
"""Folder under :data:`CHECKPOINTS_STAGE` where training runs keep their working checkpoints."""

REFINER_STAGE = "refiner"
"""The convolutional refiner of the renders (paper §3.3, Fig. 8)."""
REFINER_SHARD = "refiner"
"""The only shard of :data:`REFINER_STAGE`."""

GENERATED_STAGE = "generated"
"""Generated avatars, one shard per generation request (paper §4.2)."""
FRAMES_FILE = "frames.parquet"
"""Generated: turntable frames (avatar, view, PNG)."""
CONTACT_SHEET_FILE = "contact-sheet.png"
"""Generated: one turntable frame per avatar."""
GENERATION_JSON = "generation.json"
"""Generated: the request and the checkpoints it was made with."""

TEXT_EMBEDDING_STAGE = "text_embedding"
"""The avatar-CLIP text-image embedding trained on the renders and their captions (§4.5, B.3, B.5)."""
TEXT_EMBEDDING_SHARD = "avatar_clip"
"""The only shard of :data:`TEXT_EMBEDDING_STAGE`."""
TEXT_EMBEDDING_WEIGHTS = "avatar_clip.safetensors"
"""Text embedding: the model's tensors (image tower, text projection, temperature)."""
TEXT_EMBEDDING_CONFIG = "avatar_clip.json"
"""Text embedding: its config and retrieval figures."""

TEXT_PAIRS_STAGE = "text_pairs"
"""(caption variant embedding, z) pairs of the training subjects, the data of the text prior (appendix B.5)."""
TEXT_PAIRS_SHARD = "text_pairs"
"""The only shard of :data:`TEXT_PAIRS_STAGE`."""
TEXT_PAIRS_FILE = "text_pairs.safetensors"
"""Text pairs: ``subject_ids`` (M,), ``text`` (M, E) unit embeddings and ``z`` (M, D) latents, row k a pair."""
TEXT_PAIRS_CAPTIONS = "captions.json"
"""Text pairs: the caption of each row, for people."""

STAGES = (RENDERS_STAGE, DECODER_STAGE, TRIPLANES_STAGE, FRONTALS_STAGE, STATS_STAGE, LATENTS_STAGE, CHECKPOINTS_STAGE,
          REFINER_STAGE, GENERATED_STAGE, TEXT_EMBEDDING_STAGE, TEXT_PAIRS_STAGE)
"""Every stage folder of a dataset root, in pipeline order (what ``rodin status``, ``verify`` and ``gc`` accept)."""

EVALUATION_FOLDER = "evaluation"
"""Sample-quality evaluation (paper §4.3, §4.5, appendix C.4): plain files for people, not shards; each run
rewrites them."""
EVALUATION_JSON = "report.json"
"""Evaluation: every number of the report (non-finite ones as null)."""
EVALUATION_MARKDOWN = "report.md"
"""Evaluation: the report's tables."""
EVALUATION_SAMPLES = "samples.png"
"""Evaluation: the unconditional samples at the evaluation views, one row per sample."""
EVALUATION_NEIGHBOURS = "neighbours.png"
"""Evaluation: each sample beside its nearest training subject (appendix C.4)."""
