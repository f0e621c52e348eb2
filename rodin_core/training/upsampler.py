"""Training of the diffusion tri-plane upsampler (paper §3.3, Eq. 4; appendix B.1, Fig. 11).

The upsampler predicts the full-resolution tri-plane x_0 (not ε) from its noisy version, conditioned
on a low-resolution tri-plane y_LR at the base resolution h. One step:

    x_0   = roll_out(normalize(planes))                                  (B, C, H, 3H)
    y_LR  = roll_out(degrade(down_h(normalize(planes))))                 (B, C, h, 3h)  condition augmentation
    L     = ‖x̂_0 − x_0‖² + w_perc · L_perc(R(G(x̂_0)), R(G(x_0)))                        Eq. 4

With ``upsampler.residual`` the diffused quantity is s · (x_0 − up(y_LR)) instead of x_0
(:mod:`rodin_core.triplane.residual`); the perceptual term still renders the full tri-plane.

``degrade`` is :func:`~rodin_core.training.augment.degrade_condition`: a random combination of
downscaling, Gaussian blur and Gaussian noise (§3.3, appendix B.1), so that the ground-truth
condition resembles the base model's samples. The perceptual term renders the *denormalised*
predicted and ground-truth tri-planes through the frozen shared decoder G over the same rays: one
random ``patch_size`` x ``patch_size`` patch of one random camera of the render rig per sample
(§3.3: random 112x112 patches at 256 px), centred with probability ``face_patch_prob`` on a pixel
where the ground truth is opaque (foreground opacity > 0.5, our stand-in for the face region of
"high sampling importance"), anywhere otherwise. Rays are sampled without jitter so both renders
see the same points; the decoder gets no gradient, the predicted tri-plane does.

Random draws of a step (from :func:`~.stages.step_generator`): timesteps, noise, the condition
augmentation, then per sample the patch (foreground choice, camera, position).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rodin_core.cameras import make_rig
from rodin_core.config import RodinConfig
from rodin_core.datasets.triplanes import TriplaneBatch
from rodin_core.networks import TriplaneUNet
from rodin_core.networks.perceptual import PerceptualLoss, minimum_patch_size
from rodin_core.rendering.rays import camera_rays
from rodin_core.rendering.renderer import RenderSettings, render_rays
from rodin_core.training.augment import degrade_condition
from rodin_core.training.stage import DiffusionStage
from rodin_core.triplane.field import TriplaneDecoder
from rodin_core.triplane.rescale import downsample_planes
from rodin_core.triplane.residual import ResidualTarget
from rodin_core.triplane.rollout import roll_in, roll_out
from rodin_core.triplane.stats import PlaneStats

FOREGROUND_OPACITY = 0.5
"""Ground-truth opacity above which a pixel counts as foreground for patch centring."""
FOREGROUND_GRID = 32
"""Side of the pixel grid whose opacity is rendered (coarse pass only) to find foreground centres."""


class PatchRenderer:
    """Renders square patches of tri-planes (1, 3, C, H, W) through a frozen decoder from the render rig."""

    def __init__(self, decoder: TriplaneDecoder, cfg: RodinConfig, device: torch.device) -> None:
        render, fit = cfg.render, cfg.fit
        self.patch_size = cfg.upsampler.patch_size
        self.face_patch_prob = cfg.upsampler.face_patch_prob
        if self.patch_size > render.resolution:
            raise ValueError(f"upsampler.patch_size={self.patch_size} exceeds render.resolution={render.resolution}; "
                             "patches are cut from the rig's images")
        if decoder.cfg.channels != cfg.triplane.channels:
            raise ValueError(f"the decoder reads {decoder.cfg.channels} channels, triplane.channels is "
                             f"{cfg.triplane.channels}; load the decoder fitted with this corpus")
        self.decoder = decoder.to(device).eval().requires_grad_(False)
        rig = make_rig(render.views, render.resolution, render.fov_deg, render.camera_radius,
                       render.elevation_min_deg, render.elevation_max_deg)
        self.c2w = torch.tensor(rig.c2w, dtype=torch.float32, device=device)  # (V, 4, 4)
        self.intrinsics = torch.tensor(rig.intrinsics, dtype=torch.float32, device=device)  # (3, 3)
        self.resolution = render.resolution
        self.background = fit.background
        self.settings = RenderSettings(coarse_samples=fit.coarse_samples, fine_samples=fit.fine_samples,
                                       perturb=False)
        self.probe = RenderSettings(coarse_samples=fit.coarse_samples, fine_samples=0, perturb=False)
        stride = max(1, self.resolution // FOREGROUND_GRID)
        self.grid = torch.arange(stride // 2, self.resolution, stride, device=device)  # (G,) probe pixel indices

    def view_rays(self, view: int) -> tuple[Tensor, Tensor]:
        """Origins and directions (res, res, 3) of every pixel of rig camera ``view``."""
        origins, directions = camera_rays(self.c2w[view:view + 1], self.intrinsics[None], self.resolution,
                                          self.resolution)  # (1, res, res, 3) each
        return origins[0], directions[0]

    @torch.no_grad()
    def choose_patch(self, planes: Tensor, generator: torch.Generator) -> tuple[int, int, int]:
        """(view, top row, left column) of a patch: on the foreground of ``planes`` with prob ``face_patch_prob``."""
        device = generator.device
        on_face, view_draw, row_draw, col_draw = torch.rand(4, generator=generator, device=device).tolist()
        view = min(int(view_draw * self.c2w.shape[0]), self.c2w.shape[0] - 1)
        span = self.resolution - self.patch_size + 1
        top, left = min(int(row_draw * span), span - 1), min(int(col_draw * span), span - 1)
        if on_face < self.face_patch_prob:
            origins, directions = self.view_rays(view)
            rows, cols = torch.meshgrid(self.grid, self.grid, indexing="ij")  # (G, G) each
            opacity = render_rays(planes, self.decoder, origins[rows, cols].reshape(-1, 3),
                                  directions[rows, cols].reshape(-1, 3), self.probe, self.background).opacity
            foreground = torch.nonzero(opacity > FOREGROUND_OPACITY).flatten()  # (F,)
            if foreground.numel() > 0:
                pick = foreground[min(int(row_draw * foreground.numel()), foreground.numel() - 1)]
                centre_row, centre_col = rows.flatten()[pick].item(), cols.flatten()[pick].item()
                top = min(max(int(centre_row) - self.patch_size // 2, 0), self.resolution - self.patch_size)
                left = min(max(int(centre_col) - self.patch_size // 2, 0), self.resolution - self.patch_size)
        return view, top, left

    def render_patch(self, planes: Tensor, view: int, top: int, left: int) -> Tensor:
        """RGB (3, P, P) of the patch of ``planes`` (1, 3, C, H, W); differentiable in ``planes``."""
        p = self.patch_size
        origins, directions = self.view_rays(view)
        origins = origins[top:top + p, left:left + p].reshape(p * p, 3)  # (P*P, 3)
        directions = directions[top:top + p, left:left + p].reshape(p * p, 3)  # (P*P, 3)
        rgb = render_rays(planes, self.decoder, origins, directions, self.settings, self.background).rgb  # (P*P, 3)
        return rgb.T.reshape(3, p, p)  # (3, P, P)

    def patches(self, predicted: Tensor, target: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Same-ray patches of predicted and target raw planes (B, 3, C, H, W): (B, 3, P, P) each."""
        pred_patches, target_patches = [], []
        for index in range(predicted.shape[0]):
            target_one = target[index:index + 1].detach()  # (1, 3, C, H, W)
            view, top, left = self.choose_patch(target_one, generator)
            with torch.no_grad():
                target_patches.append(self.render_patch(target_one, view, top, left))
            pred_patches.append(self.render_patch(predicted[index:index + 1], view, top, left))
        return torch.stack(pred_patches), torch.stack(target_patches)  # (B, 3, P, P) each


class UpsamplerStage(DiffusionStage):
    """The upsampler stage: ``model`` (TriplaneUNet conditioned on low_res) and ``ema``.

    ``perceptual``: an already loaded :class:`PerceptualLoss` to share (default: a fresh one).
    """

    name = "upsampler"

    def __init__(self, cfg: RodinConfig, stats: PlaneStats, decoder: TriplaneDecoder | None,
                 device: torch.device | str = "cpu", *, rank: int = 0,
                 perceptual: PerceptualLoss | None = None) -> None:
        super().__init__(cfg, device, rank, lambda: TriplaneUNet(cfg.upsampler.unet), stats)
        self.perceptual_weight = cfg.upsampler.perceptual_weight
        self.renderer: PatchRenderer | None = None
        self.perceptual: PerceptualLoss | None = None
        if self.perceptual_weight > 0:
            if decoder is None:
                raise ValueError("the upsampler's perceptual loss (Eq. 4) renders through the frozen tri-plane "
                                 "decoder: pass decoder= (from the store's decoder/ stage), or set "
                                 "upsampler.perceptual_weight=0")
            if cfg.upsampler.patch_size < minimum_patch_size():
                raise ValueError(f"upsampler.patch_size={cfg.upsampler.patch_size} is below the "
                                 f"{minimum_patch_size()} pixels the perceptual VGG needs")
            self.renderer = PatchRenderer(decoder, cfg, self.device)
            self.perceptual = (perceptual if perceptual is not None else PerceptualLoss()).to(self.device)
        self.unet_cfg = cfg.upsampler.unet
        self.optimise({"model": self.model})

    def target(self, low_res: Tensor) -> ResidualTarget:
        """The map between rolled normalised planes and the diffused quantity for the condition ``low_res``."""
        section = self.cfg.upsampler
        return ResidualTarget.of(low_res, self.cfg.triplane.resolution, section.residual_scale, section.residual)

    def condition(self, planes: Tensor, generator: torch.Generator | None) -> Tensor:
        """Raw planes (B, 3, C, H, W) -> rolled low-resolution condition (B, C, h, 3h), degraded when a
        generator is given (training) and clean otherwise."""
        low = downsample_planes(self.stats.normalize(planes), self.cfg.triplane.rescale_min)  # (B, 3, C, h, h)
        if generator is not None:
            low = degrade_condition(low, generator, self.cfg.upsampler.aug_blur_sigma, self.cfg.upsampler.aug_noise_std)
        return roll_out(low)  # (B, C, h, 3h)

    def perceptual_loss(self, pred_xstart: Tensor, planes: Tensor, generator: torch.Generator) -> Tensor:
        """Eq. 4 per sample (B,): x̂_0 rolled normalised (B, C, H, 3H) vs raw ground-truth planes (B, 3, C, H, W)."""
        if self.renderer is None or self.perceptual is None:
            raise ValueError("this upsampler has perceptual_weight=0 and no renderer")
        predicted = self.stats.denormalize(roll_in(pred_xstart))  # (B, 3, C, H, W)
        pred_patches, target_patches = self.renderer.patches(predicted, planes, generator)  # (B, 3, P, P) each
        return self.perceptual(pred_patches, target_patches)  # (B,)

    def train_step(self, batch: TriplaneBatch, step: int) -> dict[str, float]:
        """One AdamW step; returns loss, mse, vb (hybrid loss only), perceptual, lr, grad_norm."""
        batch, generator = self.start_step(batch, step)
        planes = roll_out(self.stats.normalize(batch.planes))  # (B, C, H, 3H)
        size = planes.shape[0]
        t = torch.randint(0, self.diffusion.num_timesteps, (size,), generator=generator, device=self.device)
        noise = torch.randn(planes.shape, generator=generator, device=self.device)  # (B, C, H, 3H)
        low_res = self.condition(batch.planes, generator)  # (B, C, h, 3h)
        target = self.target(low_res)
        x0 = target.encode(planes)  # (B, C, H, 3H): the planes, or the scaled residual
        terms = self.diffusion.training_losses(self._forward, x0, t, noise=noise, model_kwargs={"low_res": low_res})
        loss = terms["loss"].mean()  # L_simple, plus L_vlb with the hybrid loss
        metrics = {"mse": terms["mse"].mean().item(), **({"vb": terms["vb"].mean().item()} if "vb" in terms else {})}
        if self.perceptual_weight > 0:
            perceptual = self.perceptual_loss(target.decode(terms["pred_xstart"]), batch.planes, generator).mean()
            loss = loss + self.perceptual_weight * perceptual
            terms["perceptual"] = perceptual
            metrics["perceptual"] = perceptual.item()
        update = self.optimisation.step(loss, step, terms, self.name)
        return {"loss": loss.item(), **metrics, **update}
