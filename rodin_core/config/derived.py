"""Fields of the component configs that another section determines, and the rule of each.

The networks of the three diffusion stages (paper §3.2, §3.3, appendix B.1, B.4) and the shared
decoder (§3.1, Eq. 1) read shapes that the tri-plane, the encoder and each stage's diffusion
process already fix: C = ``triplane.channels`` channels in and out, z of ``encoder.latent_dim``
(512, §3.2), the base model at ``triplane.rescale_min`` (64) and the upsampler at
``triplane.resolution`` (256, §3.3), and a second output for the variance when the diffusion
learns it (L_hybrid, §3.2). They are filled from their source whenever the config is validated;
a value set by the user must agree with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rodin_core.config.keys import get_key, set_key
from rodin_core.config_dict import ConfigError


def _same(value: Any) -> Any:
    return value


def _learned(var_type: Any) -> bool:
    return var_type == "learned_range"


@dataclass(frozen=True)
class Derived:
    """One derived field: ``key`` follows ``source`` by ``follow`` (a constant of its stage when no source)."""

    key: str
    """Dotted key of the derived field, e.g. ``base.unet.in_channels``."""
    source: str | None
    """Dotted key it follows, or None for a field that is the same for every config of its stage."""
    rule: str
    """How it follows, in words (errors quote it)."""
    follow: Callable[[Any], Any] = _same
    """The field's value from the source's value (from None when there is no source)."""
    switch: str | None = None
    """Dotted key of a bool that turns the field off: while it is false, the field is ``off``, not derived."""
    off: Any = None
    """The field's value while ``switch`` is false."""

    def value(self, cfg: Any) -> Any:
        """The field's value in ``cfg``."""
        if self.switch is not None and not get_key(cfg, self.switch):
            return self.off
        return self.follow(get_key(cfg, self.source) if self.source else None)

    def conflict(self, cfg: Any, given: Any) -> str:
        """Why ``given`` cannot be set at :attr:`key`, and what to set instead."""
        if self.source is None:
            return (f"{self.key}={given!r} is fixed by its stage ({self.rule}: always {self.value(cfg)!r}); "
                    f"leave {self.key} out")
        if self.switch is not None:
            return (f"{self.key}={given!r} conflicts with {self.source}={get_key(cfg, self.source)!r} and "
                    f"{self.switch}={get_key(cfg, self.switch)!r}: {self.key} is derived from them ({self.rule}); "
                    f"leave {self.key} out and set {self.source} or {self.switch} instead")
        return (f"{self.key}={given!r} conflicts with {self.source}={get_key(cfg, self.source)!r}: {self.key} is "
                f"derived from {self.source} ({self.rule}); leave {self.key} out and set {self.source} instead")


_CHANNELS = "the planes' feature channels"
_LEARN_SIGMA = "true exactly when var_type is 'learned_range'"

DERIVED = (
    Derived("triplane.decoder.channels", "triplane.channels", _CHANNELS),
    Derived("base.unet.in_channels", "triplane.channels", _CHANNELS),
    Derived("base.unet.out_channels", "triplane.channels", _CHANNELS),
    Derived("base.unet.latent_dim", "encoder.latent_dim", "the size of z; 0 when base.latent_conditioning is false",
            switch="base.latent_conditioning", off=0),
    Derived("base.unet.cond_channels", None, "the base model is conditioned on z, not on a tri-plane", lambda _: 0),
    Derived("base.unet.image_size", "triplane.rescale_min", "the base model's plane size"),
    Derived("base.unet.learn_sigma", "base.diffusion.var_type", _LEARN_SIGMA, _learned),
    Derived("upsampler.unet.in_channels", "triplane.channels", _CHANNELS),
    Derived("upsampler.unet.out_channels", "triplane.channels", _CHANNELS),
    Derived("upsampler.unet.latent_dim", None, "the upsampler is conditioned on a tri-plane, not on z", lambda _: 0),
    Derived("upsampler.unet.cond_channels", "triplane.channels", "the low-resolution planes' channels"),
    Derived("upsampler.unet.image_size", "triplane.resolution", "the full plane size"),
    Derived("upsampler.unet.learn_sigma", "upsampler.diffusion.var_type", _LEARN_SIGMA, _learned),
    Derived("prior.mlp.latent_dim", "encoder.latent_dim", "the size of z"),
    Derived("prior.mlp.learn_sigma", "prior.diffusion.var_type", _LEARN_SIGMA, _learned),
    Derived("text_prior.mlp.latent_dim", "encoder.latent_dim", "the size of z"),
    Derived("text_prior.mlp.text_dim", "encoder.latent_dim",
            "the size of the text embedding: the text tower shares the image tower's space, so it is z's size"),
    Derived("text_prior.mlp.learn_sigma", "text_prior.diffusion.var_type", _LEARN_SIGMA, _learned),
)
"""Every derived field of :class:`~rodin_core.config.schema.RodinConfig`."""


def derived_note(key: str) -> str:
    """Which fields of the component at ``key`` (e.g. ``base.unet``) follow another section, for its errors."""
    parts = [f"{rule.key[len(key) + 1:]} from {rule.source}" for rule in DERIVED
             if rule.source is not None and rule.key.startswith(f"{key}.")]
    return f" (derived in {key}: {', '.join(parts)})" if parts else ""


def derive(cfg: Any, given: Mapping[str, Any]) -> None:
    """Fill every derived field of ``cfg`` from its source; raise :class:`ConfigError` when a value in
    ``given`` (dotted key -> value the user set) disagrees with it."""
    values = {rule.key: rule.value(cfg) for rule in DERIVED}
    for rule in DERIVED:
        if rule.key in given and given[rule.key] != values[rule.key]:
            raise ConfigError(rule.conflict(cfg, given[rule.key]))
    for key, value in values.items():
        set_key(cfg, key, value, {})
