"""Text edit directions in the base model's z space (paper §4.5, appendix B.3).

The paper edits an avatar along ``δ = E_T(T_tgt) − E_T(T_src)``, the difference of two prompts'
embeddings in the text tower whose space the conditioning encoder shares
(:func:`rodin_core.text.towers.text_tower`; ``encoder.kind=learned`` has none).

Shapes and scale: a text tower embeds N prompts to (N, D) unit vectors e_T in the joint space.
The image encoder's z is the image embedding scaled to norm sqrt(D)
(:func:`rodin_core.encoders.scale_to_sphere`), so the direction is mapped the same way:
``δ = scale_to_sphere(e_T(T_tgt)) − scale_to_sphere(e_T(T_src))``, (D,) float32 in the raw units of
``Avatar.z`` and ``GenerationPipeline.generate``. The prior's latent normaliser is not involved: it
standardises z for the prior only, and the base model reads raw z.
"""

from __future__ import annotations

from torch import Tensor

from rodin_core.encoders import EncoderUnavailableError, scale_to_sphere
from rodin_core.text.towers import TextTower, check_prompt


def text_direction(tower: TextTower, target: str, source: str, names: tuple[str, str] = ("target", "source")) -> Tensor:
    """δ (D,) float32 = scale_to_sphere(e_T(target)) − scale_to_sphere(e_T(source)) in z units.

    Each distinct prompt is embedded once, on its own, so identical prompts give exactly zero and
    swapping them exactly negates δ. ``names`` label the prompts in a :class:`PromptError`.
    """
    for prompt, name in zip((target, source), names, strict=True):
        check_prompt(tower, prompt, name)
    points = {prompt: scale_to_sphere(tower.embed([prompt]))[0] for prompt in dict.fromkeys((target, source))}  # (D,)
    delta = points[target] - points[source]  # (D,)
    if tuple(delta.shape) != (tower.latent_dim,):
        raise EncoderUnavailableError(f"the {tower.kind} text tower returned embeddings of shape {tuple(delta.shape)},"
                                      f" expected ({tower.latent_dim},)")
    return delta.float()
