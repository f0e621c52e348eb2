"""What the 3D-aware convolution (paper §3.2, Fig. 4b) costs inside the base U-Net, in one run.

For the base U-Net of each preset (``tiny``, ``small``), on batches of the preset's batch size, the
seconds of one forward + backward pass of three networks with the same weights:

- ``plain``: the same U-Net with no 3D-aware convolution (``aware_resolutions=()``);
- ``context``: the 3D-aware convolution as a 3C -> C convolution over the concatenated context
  (own plane and the two broadcast pooled lines), the textbook form;
- ``factorised``: the form the project runs (:class:`~rodin_core.networks.aware_conv.TriplaneAwareConv`):
  the own-plane convolution plus 1D convolutions of the pooled lines, equal to ``context`` to float rounding.

It prints the median seconds per pass and the overhead ratios over ``plain``. Run:
``.venv/bin/python benchmarks/aware_conv_overhead.py [--repeats 5] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from rodin_core.config import preset_config
from rodin_core.networks import TriplaneUNet, UNetConfig
from rodin_core.networks.aware_conv import TriplaneAwareConv, aware_context


@contextmanager
def context_form() -> Iterator[None]:
    """Run every :class:`TriplaneAwareConv` as the convolution of the concatenated context while inside."""
    factorised = TriplaneAwareConv.forward
    TriplaneAwareConv.forward = lambda self, planes: self.conv(aware_context(planes))  # type: ignore[method-assign]
    try:
        yield
    finally:
        TriplaneAwareConv.forward = factorised  # type: ignore[method-assign]


def seconds_per_pass(net: TriplaneUNet, cfg: UNetConfig, batch: int, repeats: int) -> float:
    """Median seconds of one forward + backward pass on random inputs (one warm-up pass first)."""
    size = cfg.image_size
    x = torch.randn(batch, cfg.in_channels, size, 3 * size)  # (B, C, H, 3H)
    t = torch.randint(0, 1000, (batch,))
    z = torch.randn(batch, cfg.latent_dim) if cfg.latent_dim else None
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        net(x, t, z).square().mean().backward()
        times.append(time.perf_counter() - start)
        net.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def measure(preset: str, repeats: int) -> dict[str, float]:
    """Seconds per pass of the plain, context and factorised base U-Nets of ``preset``."""
    cfg = preset_config(preset)
    unet, batch = cfg.base.unet, cfg.base.train.batch_size
    plain_cfg = dataclasses.replace(unet, aware_resolutions=())
    torch.manual_seed(0)
    aware = TriplaneUNet(unet)
    plain = TriplaneUNet(plain_cfg)
    result = {"plain": seconds_per_pass(plain, plain_cfg, batch, repeats)}
    with context_form():
        result["context"] = seconds_per_pass(aware, unet, batch, repeats)
    result["factorised"] = seconds_per_pass(aware, unet, batch, repeats)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per network (median)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch threads {args.threads}; median of {args.repeats} forward+backward passes of the base U-Net")
    print(f"{'preset':8} {'batch':>5} {'plain s':>9} {'context s':>10} {'factorised s':>13} "
          f"{'context/plain':>14} {'factorised/plain':>17}")
    for preset in ("tiny", "small"):
        cfg = preset_config(preset)
        seconds = measure(preset, args.repeats)
        print(f"{preset:8} {cfg.base.train.batch_size:>5} {seconds['plain']:>9.3f} {seconds['context']:>10.3f} "
              f"{seconds['factorised']:>13.3f} {seconds['context'] / seconds['plain']:>14.2f}x "
              f"{seconds['factorised'] / seconds['plain']:>16.2f}x")


if __name__ == "__main__":
    main()
