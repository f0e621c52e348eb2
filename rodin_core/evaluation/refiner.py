"""How much the convolutional refiner (paper §3.3, Fig. 8) adds over bilinear up-sampling.

Both are measured against the high-resolution corpus renders of held-out subjects: PSNR per image
and LPIPS (:class:`~rodin_core.metrics.LPIPS`), averaged over the pairs; and a sheet showing, per
pair, the fitted render (pixels repeated), its bilinear up-sample, the refined image and the
ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rodin_core.datasets.refiner_pairs import RefinerPairs
from rodin_core.imaging import contact_sheet, to_uint8
from rodin_core.metrics import LPIPS, psnr
from rodin_core.networks.refiner import ConvRefiner, bilinear_upsample

SHEET_COLUMNS = ("fitted render", "bilinear", "refined", "ground truth")


@dataclass
class RefinerScores:
    """Mean PSNR (dB) and LPIPS of the refined and bilinear images against the ground truth."""

    pairs: int
    psnr_refined: float
    psnr_bilinear: float
    lpips_refined: float
    lpips_bilinear: float
    lpips_network: str

    def table(self) -> str:
        """The scores as a Markdown table."""
        return ("| method | PSNR (dB) ↑ | LPIPS ↓ |\n|---|---|---|\n"
                f"| bilinear up-sample | {self.psnr_bilinear:.2f} | {self.lpips_bilinear:.4f} |\n"
                f"| refiner | {self.psnr_refined:.2f} | {self.lpips_refined:.4f} |")


@torch.no_grad()
def upsampled(model: ConvRefiner, pairs: RefinerPairs, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Refined and bilinear images of every pair, each float32 (N, H, W, 3) in [0, 1]."""
    model.eval()
    refined, bilinear = [], []
    for start in range(0, len(pairs), batch):
        inputs = pairs.inputs[start:start + batch]
        refined.append(model(inputs).clamp(0.0, 1.0))
        bilinear.append(bilinear_upsample(inputs[:, :3], model.cfg.scale).clamp(0.0, 1.0))
    return (torch.cat(refined).permute(0, 2, 3, 1).numpy(),  # (N, H, W, 3)
            torch.cat(bilinear).permute(0, 2, 3, 1).numpy())  # (N, H, W, 3)


def score_refiner(model: ConvRefiner, pairs: RefinerPairs, lpips: LPIPS) -> RefinerScores:
    """PSNR and LPIPS of the refined and the bilinear images of ``pairs`` against their targets."""
    if pairs.scale != model.cfg.scale:
        raise ValueError(f"the pairs up-sample by {pairs.scale}, the refiner by {model.cfg.scale}")
    refined, bilinear = upsampled(model, pairs)
    truth = pairs.targets.permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    return RefinerScores(
        pairs=len(pairs),
        psnr_refined=float(np.mean([psnr(r, t) for r, t in zip(refined, truth, strict=True)])),
        psnr_bilinear=float(np.mean([psnr(b, t) for b, t in zip(bilinear, truth, strict=True)])),
        lpips_refined=float(lpips(refined, truth).mean()),
        lpips_bilinear=float(lpips(bilinear, truth).mean()),
        lpips_network=lpips.network,
    )


def refiner_sheet(model: ConvRefiner, pairs: RefinerPairs) -> np.ndarray:
    """One row per pair: the fitted render (pixels repeated), bilinear, refined, ground truth -> RGB uint8."""
    refined, bilinear = upsampled(model, pairs)
    scale = model.cfg.scale
    images, labels = [], []
    for i in range(len(pairs)):
        low = pairs.inputs[i, :3].clamp(0.0, 1.0).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        row = [low.permute(1, 2, 0), torch.from_numpy(bilinear[i]), torch.from_numpy(refined[i]),
               pairs.targets[i].permute(1, 2, 0)]
        images += [to_uint8(image.contiguous()) for image in row]
        labels += [f"#{int(pairs.subjects[i])} v{int(pairs.views[i])} {SHEET_COLUMNS[0]}", *SHEET_COLUMNS[1:]]
    return contact_sheet(images, len(SHEET_COLUMNS), labels)
