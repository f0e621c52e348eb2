"""The tri-plane representation's config: plane size, channels, rescaling and the shared decoder.

Paper §3.1 (Eq. 1, Fig. 3) and appendix B.2, Fig. 12: each subject is three C x H x W feature
planes (paper: C = 32, H = W = 256) decoded by one shared 4-layer MLP, and planes are randomly
rescaled down to the base diffusion resolution (paper: 64) while fitting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rodin_core.config_dict import ConfigError, check_component, check_range
from rodin_core.triplane.field import DecoderConfig


@dataclass
class TriplaneConfig:
    """The tri-plane representation and its shared MLP decoder (paper §3.1, Eq. 1, B.2, Fig. 12)."""

    channels: int = 32
    """Feature channels C of each plane (paper: 32)."""
    resolution: int = 256
    """Plane side H = W (paper: 256)."""
    rescale_min: int = 64
    """Smallest size of random rescaling: the base diffusion resolution (paper: 64, §3.1, Fig. 3)."""
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    """The shared MLP decoder G_theta (paper: 4 layers); its ``channels`` is :attr:`channels`."""

    def validate(self, where: str = "triplane") -> None:
        """Raise :class:`ConfigError` naming the first bad field, its value and the valid range."""
        check_range(f"{where}.channels", self.channels, low=1)
        check_range(f"{where}.resolution", self.resolution, low=4)
        check_range(f"{where}.rescale_min", self.rescale_min, low=2, high=self.resolution)
        check_component(f"{where}.decoder", self.decoder)
        if self.decoder.channels != self.channels:
            raise ConfigError(f"{where}.decoder.channels={self.decoder.channels} differs from "
                              f"{where}.channels={self.channels}; the decoder reads the planes' channels, "
                              f"set {where}.decoder.channels={self.channels}")
