"""Empty-space skipping with an occupancy grid (Instant-NGP, Müller et al. 2022, §4; paper §3.1, B.2).

Most sample points of a ray through the tri-plane cube lie in empty space, where the field's
density is ~0 and the point neither colours nor occludes anything. An occupancy grid of R^3 cells
over [-bound, bound]^3 marks the cells whose density (at the cell centre, dilated by one cell so
thin or moving surfaces keep their neighbours) exceeds a threshold; the renderer then queries the
MLP decoder only at points in occupied cells and gives every other point zero density. As in
Instant-NGP the threshold is min(``sigma_min``, mean density), so a faint untrained field is not
switched off entirely, and a field with NaN/inf density is left fully occupied (its renders show it). Fitting
refreshes the grid from the current field every few steps, so the occupied region follows the
subject as its planes change (a cell next to an occupied one is always queried, so the surface can
grow by one cell per refresh).

The skipped points contribute exactly nothing when their true density is 0; with a threshold of
``sigma_min`` a skipped cell of side ``d`` hides at most an opacity of ``1 - exp(-sigma_min d)``
per cell crossed (6e-4 for the defaults and a 32^3 grid).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

DensityFn = Callable[[Tensor], Tensor]
"""points (N, 3) -> density (N,), evaluated without gradient."""

DEFAULT_SIGMA_MIN = 0.01
"""Density above which a cell counts as occupied."""


class OccupancyGrid:
    """A boolean grid (R, R, R) over [-bound, bound]^3, indexed [x, y, z] like the world axes."""

    def __init__(self, resolution: int, bound: float = 1.0, sigma_min: float = DEFAULT_SIGMA_MIN,
                 dilation: int = 1) -> None:
        if resolution < 2:
            raise ValueError(f"occupancy grid resolution must be >= 2, got {resolution}")
        if bound <= 0 or sigma_min < 0 or dilation < 0:
            raise ValueError(f"need bound > 0, sigma_min >= 0, dilation >= 0; got {bound}, {sigma_min}, {dilation}")
        self.resolution, self.bound, self.sigma_min, self.dilation = resolution, float(bound), float(sigma_min), dilation
        self.occupied = torch.ones(resolution, resolution, resolution, dtype=torch.bool)

    def cell_centres(self) -> Tensor:
        """(R^3, 3) world coordinates of the cell centres, x slowest, z fastest."""
        axis = (torch.arange(self.resolution, dtype=torch.float32) + 0.5) / self.resolution * 2 - 1
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)  # (R, R, R, 3)
        return grid.reshape(-1, 3) * self.bound  # (R^3, 3)

    @torch.no_grad()
    def update(self, density: DensityFn, chunk: int = 65536) -> float:
        """Re-mark the cells from ``density`` at their centres; returns the occupied fraction."""
        centres = self.cell_centres()
        sigma = torch.cat([density(centres[i:i + chunk]) for i in range(0, centres.shape[0], chunk)])  # (R^3,)
        if not torch.isfinite(sigma).all():  # let the renderer meet (and report) a broken field
            self.occupied = torch.ones_like(self.occupied)
            return 1.0
        threshold = min(self.sigma_min, float(sigma.mean()))  # an untrained, faint field keeps its denser half
        grid = (sigma > threshold).reshape(1, 1, *self.occupied.shape).float()  # (1, 1, R, R, R)
        if self.dilation > 0:
            size = 2 * self.dilation + 1
            grid = F.max_pool3d(grid, kernel_size=size, stride=1, padding=self.dilation)
        self.occupied = grid[0, 0] > 0
        return self.occupied_fraction()

    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def query(self, points: Tensor) -> Tensor:
        """Whether each point (..., 3) lies in an occupied cell: (...,) bool; points outside the cube are empty."""
        scaled = (points / self.bound + 1.0) * 0.5 * self.resolution  # (..., 3) in cell units
        inside = ((scaled >= 0) & (scaled < self.resolution)).all(dim=-1)  # (...,)
        index = scaled.long().clamp(0, self.resolution - 1)  # (..., 3)
        occupied = self.occupied.to(points.device)[index[..., 0], index[..., 1], index[..., 2]]  # (...,)
        return occupied & inside
