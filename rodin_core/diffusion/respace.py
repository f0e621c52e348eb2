"""Respacing: sampling a T-step process with a subset of its timesteps (paper appendix B.1).

Rodin trains over 1,000 steps and samples with 100 (appendix B.1). Keeping the steps
S = {s_0 < ... < s_{K-1}} of the original process and setting β'_k = 1 - ᾱ_{s_k} / ᾱ_{s_{k-1}}
gives a K-step process whose ᾱ'_k equals ᾱ_{s_k} (Nichol & Dhariwal 2021, "Improved Denoising
Diffusion Probabilistic Models", §4; the same subsequences drive DDIM, Song et al. 2021 "Denoising
Diffusion Implicit Models", §4.2). The respaced process shows the model the original timestep s_k,
so a network trained on the full process is used unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from rodin_core.diffusion.gaussian import GaussianDiffusion


def space_timesteps(num_steps: int, section_counts: str | int | list[int]) -> set[int]:
    """The original timesteps to keep from a ``num_steps``-step process.

    ``section_counts``: an int or ``"N"`` keeps N steps evenly spread over [0, num_steps - 1]
    (both ends included); ``"ddimN"`` keeps ``range(0, num_steps, stride)`` for the integer stride
    that gives exactly N steps (DDIM's spacing); a list or comma-separated string ``[a, b, ...]``
    splits the process into that many equal sections and keeps ``a`` steps from the first, ``b``
    from the second, and so on, each evenly spread over its section.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    if isinstance(section_counts, str) and section_counts.startswith("ddim"):
        return _ddim_steps(num_steps, section_counts)
    counts = _parse_counts(section_counts)
    base_size, extra = divmod(num_steps, len(counts))
    if base_size == 0:
        raise ValueError(f"cannot split {num_steps} steps into {len(counts)} sections ({section_counts!r})")
    kept: set[int] = set()
    start = 0
    for index, count in enumerate(counts):
        size = base_size + (1 if index < extra else 0)
        if count > size:
            raise ValueError(
                f"cannot keep {count} steps from a section of {size} steps "
                f"({num_steps} steps split as {section_counts!r})"
            )
        stride = (size - 1) / (count - 1) if count > 1 else 0.0
        kept.update(start + round(k * stride) for k in range(count))
        start += size
    return kept


def respace_diffusion(base: GaussianDiffusion, use_timesteps: Iterable[int]) -> GaussianDiffusion:
    """The process over the kept steps of ``base``: same ᾱ at those steps, same types and λ.

    β'_k = 1 - ᾱ_{s_k} / ᾱ_{s_{k-1}} with ᾱ_{s_{-1}} = 1, and the model is shown ``base``'s own
    timestep for s_k (respacing a respaced process composes the maps).
    """
    kept = np.array(sorted(set(use_timesteps)), dtype=np.int64)
    if kept.size < 2:
        raise ValueError(f"respacing needs at least 2 kept steps, got {kept.tolist()}")
    if kept[0] < 0 or kept[-1] >= base.num_timesteps:
        raise ValueError(
            f"kept steps must lie in [0, {base.num_timesteps}), got min {int(kept[0])}, max {int(kept[-1])}"
        )
    alphas_cumprod = base.alphas_cumprod[kept]  # (K,)
    betas = 1.0 - alphas_cumprod / np.append(1.0, alphas_cumprod[:-1])
    return GaussianDiffusion(
        betas,
        mean_type=base.mean_type,
        var_type=base.var_type,
        loss_type=base.loss_type,
        vlb_weight=base.vlb_weight,
        timestep_map=base.timestep_map[kept],
        loss_weighting=base.loss_weighting,
        min_snr_gamma=base.min_snr_gamma,
    )


def _ddim_steps(num_steps: int, section_counts: str) -> set[int]:
    wanted = _positive_int(section_counts[len("ddim"):], section_counts)
    for stride in range(1, num_steps + 1):
        steps = range(0, num_steps, stride)
        if len(steps) == wanted:
            return set(steps)
        if len(steps) < wanted:
            break
    raise ValueError(f"no integer stride gives exactly {wanted} steps out of {num_steps} ({section_counts!r})")


def _parse_counts(section_counts: str | int | list[int]) -> list[int]:
    if isinstance(section_counts, bool):
        raise TypeError(f"section_counts must be an int, a string or a list of ints, got {section_counts!r}")
    if isinstance(section_counts, int):
        return [_positive_int(str(section_counts), section_counts)]
    if isinstance(section_counts, str):
        return [_positive_int(part, section_counts) for part in section_counts.split(",")]
    if not isinstance(section_counts, list):
        raise TypeError(f"section_counts must be an int, a string or a list of ints, got {section_counts!r}")
    if not section_counts:
        raise ValueError("section_counts is an empty list; give at least one step count, e.g. [10, 15, 20]")
    return [_positive_int(str(count), section_counts) for count in section_counts]


def _positive_int(text: str, whole: object) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            f"bad step count {text.strip()!r} in {whole!r}: expected positive ints such as 100, "
            "'ddim50' or '10,15,20'"
        )
    return value
