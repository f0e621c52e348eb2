"""The upsampler's residual parameterisation: diffuse the detail a bilinear up-sample lacks (paper §3.3).

The paper's upsampler predicts the full-resolution tri-plane x_0 itself from its noisy version and the
low-resolution condition y_LR. At small scale a network that must re-create the whole tri-plane loses more
than it adds: it renders below the plain bilinear up-sample of its own input. With ``upsampler.residual``
the diffused quantity is instead the scaled difference to that up-sample,

    r_0 = s · (x_0 − up(y_LR))            x_0 = up(y_LR) + r_0 / s                   (rolled, normalised)

so a network that predicts r̂_0 = 0 returns exactly the bilinear up-sample, and whatever it learns is
detail on top of it. ``s`` (``upsampler.residual_scale``) brings the residual, whose spread is a fraction of
the normalised planes', back to about unit standard deviation, the scale the noise schedule assumes. y_LR
is the condition the network sees (degraded while training, the base sample while sampling), so the
identity holds for the condition actually given.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from rodin_core.triplane.rescale import upsample_planes
from rodin_core.triplane.rollout import roll_in, roll_out


@dataclass(frozen=True)
class ResidualTarget:
    """Maps rolled normalised full-resolution planes to the diffused quantity and back, for one condition.

    ``base``: the rolled bilinear up-sample (B, C, H, 3H) of the condition; ``scale``: s (1 without residual,
    ``base`` then zero).
    """

    base: Tensor
    scale: float

    @classmethod
    def of(cls, low_res: Tensor, size: int, scale: float, residual: bool = True) -> ResidualTarget:
        """The target for a rolled condition ``low_res`` (B, C, h, 3h) and full resolution ``size``;
        ``residual=False`` is the paper's direct x_0 (the identity map)."""
        if not scale > 0:
            raise ValueError(f"upsampler.residual_scale must be > 0, got {scale!r}")
        if not residual:
            return cls(low_res.new_zeros(low_res.shape[0], low_res.shape[1], size, 3 * size), 1.0)
        return cls(roll_out(upsample_planes(roll_in(low_res), size)), float(scale))  # (B, C, H, 3H)

    def encode(self, planes: Tensor) -> Tensor:
        """Rolled normalised planes (B, C, H, 3H) -> the diffused quantity s · (x − up(y_LR))."""
        return (planes - self.base) * self.scale

    def decode(self, diffused: Tensor) -> Tensor:
        """The diffused quantity (B, C, H, 3H) -> rolled normalised planes up(y_LR) + r / s."""
        return self.base + diffused / self.scale
