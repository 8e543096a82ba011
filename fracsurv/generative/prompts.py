"""Clinical prompts and the from-scratch prompt encoder of ``DiffXGenerator``.

The Diff-X study conditions its second latent diffusion model on prompts such as
"An image of 75 years old female". No pretrained text encoder may be downloaded,
and a general-purpose one would be wasted on a vocabulary this small, so the
encoder here is trained from scratch together with the diffusion model:

* the template's words and the sex values are tokens of a fixed vocabulary
  (anything else maps to ``<unk>``);
* a number (the age) is not a token: it enters as an *affine* embedding
  ``(age - 70) / 20 * u + b``, so two ages always give different inputs and the
  inputs are ordered along ``u`` by construction;
* learned positions and one transformer layer mix the tokens into the
  ``(L, d)`` sequence the UNet's cross-attention reads;
* a learned "null" sequence stands for the empty prompt of classifier-free
  guidance.

Nothing in a library provides such a numeric-aware tokenizer, hence this module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["PromptEncoder", "format_prompt", "sex_word", "tokenize"]

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_SEX_WORDS = {"f": "female", "female": "female", "w": "female", "woman": "female", "1": "female",
              "m": "male", "male": "male", "man": "male", "0": "male"}


def sex_word(value: Any) -> str:
    """``"female"`` or ``"male"`` from the usual encodings (F/M, female/male, 1/0)."""
    key = str(value).strip().lower()
    if isinstance(value, bool | np.bool_):
        key = "1" if value else "0"
    elif isinstance(value, int | float | np.integer | np.floating) and not np.isnan(value):
        key = str(int(value))
    if key not in _SEX_WORDS:
        raise ValueError(f"sex must be female/male (or F/M, 1/0), got {value!r}")
    return _SEX_WORDS[key]


def format_prompt(template: str, age: float, sex: Any) -> str:
    """Fill ``{age}`` (rounded to whole years) and ``{sex}`` in ``template``."""
    return template.format(age=round(float(age)), sex=sex_word(sex))


def _words(text: str) -> list[str]:
    return text.lower().replace(",", " ").split()


def tokenize(prompts: Sequence[str], vocab: Sequence[str], length: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids, numeric values and number masks of ``prompts``.

    Returns arrays of shape ``(n, length)``: word ids (0 = padding, 1 = number,
    2 = unknown, 3.. = ``vocab``), the value of each number token (0 elsewhere),
    and a boolean mask of the number tokens. Prompts longer than ``length`` are
    an error, not silently cut.
    """
    index = {w: i + 3 for i, w in enumerate(vocab)}
    ids = np.zeros((len(prompts), length), dtype=np.int64)
    values = np.zeros((len(prompts), length), dtype=np.float32)
    for r, text in enumerate(prompts):
        words = _words(text)
        if len(words) > length:
            raise ValueError(f"prompt {r} has {len(words)} words, more than {length}: {text!r}")
        for c, w in enumerate(words):
            if _NUMBER.match(w):
                ids[r, c], values[r, c] = 1, float(w)
            else:
                ids[r, c] = index.get(w, 2)
    return ids, values, ids == 1


class PromptEncoder(nn.Module):
    """Prompt -> ``(L, dim)`` embedding sequence (see the module docstring).

    Parameters
    ----------
    template : str
        Prompt template with ``{age}`` and ``{sex}``; its words, plus "female"
        and "male", are the vocabulary.
    dim : int
        Embedding width (the UNets' ``cross_attention_dim``).
    extra_words : int
        Spare length beyond the template's word count.
    """

    def __init__(self, template: str, dim: int, extra_words: int = 2) -> None:
        super().__init__()
        words = [w for w in _words(template.replace("{age}", " ").replace("{sex}", " "))]
        self.vocab = sorted(set(words) | {"female", "male"})
        self.length = len(_words(template)) + extra_words
        self.words = nn.Embedding(len(self.vocab) + 3, dim, padding_idx=0)
        self.age_direction = nn.Parameter(torch.randn(dim) / dim**0.5)
        self.age_bias = nn.Parameter(torch.zeros(dim))
        self.position = nn.Parameter(torch.randn(self.length, dim) * 0.02)
        self.mix = nn.TransformerEncoderLayer(dim, nhead=max(1, dim // 32), dim_feedforward=2 * dim,
                                              dropout=0.0, batch_first=True)
        self.null = nn.Parameter(torch.randn(self.length, dim) * 0.02)

    def token_embeddings(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Word or affine age embedding of every token, before positions and mixing."""
        emb = self.words(ids)
        age = ((values - 70.0) / 20.0).unsqueeze(-1) * self.age_direction + self.age_bias
        return torch.where((ids == 1).unsqueeze(-1), age, emb)

    def encode_tokens(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Embedding sequences ``(n, L, dim)`` of tokenised prompts."""
        h = self.token_embeddings(ids, values) + self.position
        return self.mix(h, src_key_padding_mask=ids == 0)

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embedding sequences ``(n, L, dim)`` of prompt strings."""
        ids, values, _ = tokenize(prompts, self.vocab, self.length)
        device = self.position.device
        return self.encode_tokens(torch.from_numpy(ids).to(device),
                                  torch.from_numpy(values).to(device))

    def null_embedding(self, n: int) -> torch.Tensor:
        """The learned empty prompt, repeated ``n`` times (classifier-free guidance)."""
        return self.null.unsqueeze(0).expand(n, -1, -1)
