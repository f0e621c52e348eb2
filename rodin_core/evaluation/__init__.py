"""Evaluation of trained models against ground truth (paper §4.3, §4.5, appendix C.4, C.5).

- :mod:`.reconstruction`: conditional avatar reconstruction metrics of Table 4 (portrait inversion
  of held-out subjects scored with PSNR / SSIM / LPIPS against their ground-truth views).
- :mod:`.features`: frozen image features for distribution metrics (the shift-tolerant VGG16 of
  ``stlpips-pytorch``, CLIP image embeddings).
- :mod:`.frechet`: the Fréchet distance between two feature sets (Heusel et al. 2017; CLIP-FID on
  CLIP features, §4.3) and its floor, a set against its own halves.
- :mod:`.neighbours`: nearest training subjects of generated samples (appendix C.4) and their sheet.
- :mod:`.sample_quality`: unconditional samples against the training subjects: spread of their
  normalised planes, nearest subjects with the training set's own baseline, the Fréchet distance.
- :mod:`.quality_report` and :mod:`.quality_job`: the sample-quality report of a dataset root
  (reconstruction of training and held-out subjects, samples) and the host-side job that measures it.
- :mod:`.attributes` and :mod:`.attribute_scores`: the attribute classifier that reads an avatar's
  attributes back from its renders (``judge``), and its held-out accuracy next to each base rate.

The names below are imported on first use (PEP 562): importing this package loads no torch.
"""

from typing import Any

__all__ = [
    "NEIGHBOUR_METRICS",
    "VGG_FEATURES",
    "CLIPFeatures",
    "FrechetResult",
    "ImageFeatures",
    "Neighbours",
    "VGGFeatures",
    "frechet_distance",
    "frechet_floor",
    "frechet_from_moments",
    "leave_one_out_neighbours",
    "nearest_neighbours",
    "neighbour_sheet",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'rodin_core.evaluation' has no attribute {name!r}")
    from rodin_core.evaluation import features, frechet, neighbours

    for module in (features, frechet, neighbours):
        if hasattr(module, name):
            globals()[name] = getattr(module, name)
            return globals()[name]
    raise AttributeError(f"module 'rodin_core.evaluation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
