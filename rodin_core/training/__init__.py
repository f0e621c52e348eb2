"""Training of the diffusion stages (paper §3.2, §3.3, appendix B.1, B.4).

- :mod:`.stage`: the interface of a stage; :mod:`.registry` builds one by name;
- :mod:`.base`, :mod:`.upsampler`, :mod:`.prior`: the three stages;
- :mod:`.optimisation`: AdamW with warm-up, clipping, gradient averaging across ranks, seeding;
- :mod:`.ema`, :mod:`.augment`, :mod:`.loop`: weight averaging, condition augmentation, the step loop.

Nothing below this package imports it: generation and evaluation load checkpoints without it.
"""
