"""Diffusion networks on rolled-out tri-planes (paper §3.2, §3.3, appendix B.1, B.4).

The 3D-aware convolution (:mod:`.aware_conv`), the ADM blocks on tri-planes (:mod:`.blocks`), the
tri-plane U-Net of the base model and the upsampler (:mod:`.unet`), the latent MLP denoiser
(:mod:`.latent_mlp`), and parameter / FLOP summaries (:mod:`.summary`).
"""

from rodin_core.networks.aware_conv import PlaneConv2d, TriplaneAwareConv, aware_context
from rodin_core.networks.latent_mlp import (
    LatentMLP,
    LatentMLPConfig,
    TextLatentMLPConfig,
)
from rodin_core.networks.summary import count_parameters, describe, forward_flops
from rodin_core.networks.unet import TriplaneUNet, UNetConfig

__all__ = [
    "LatentMLP",
    "LatentMLPConfig",
    "PlaneConv2d",
    "TextLatentMLPConfig",
    "TriplaneAwareConv",
    "TriplaneUNet",
    "UNetConfig",
    "aware_context",
    "count_parameters",
    "describe",
    "forward_flops",
]
