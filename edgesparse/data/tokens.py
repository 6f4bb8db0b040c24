"""``{builtin: keyword_tokens}``: generated token-id sequences, for small text/command transformers.

Each sample is ``length`` int32 token ids of a vocabulary of ``vocab`` ids (0 is padding, at the end of
shorter sequences): random filler words with a command's keywords in it. Every class (command) owns
``keywords_per_class`` keyword ids; a sample holds two keywords of its class and one of another class (a
distractor) at random positions, so the class is the one whose keywords come twice. The ids are fed to the
model as int32 (never scaled). Generated from the seed, no download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from edgesparse.data.registry import BuiltinSource, Loaded, builtin


class KeywordTokensConfig(BuiltinSource):
    """``{builtin: keyword_tokens, samples: 2000, classes: 4, length: 16, vocab: 64, keywords_per_class: 3}``."""

    builtin: Literal["keyword_tokens"]
    samples: int = Field(2000, ge=40)
    classes: int = Field(4, ge=2, le=32)
    length: int = Field(16, ge=4, le=512, description="tokens per sequence (padded with id 0)")
    vocab: int = Field(64, ge=8, le=100_000, description="ids 0..vocab-1 (Embedding input_dim >= vocab)")
    keywords_per_class: int = Field(3, ge=1, le=64)

    @model_validator(mode="after")
    def _fits(self) -> KeywordTokensConfig:
        if self.classes * self.keywords_per_class + 2 > self.vocab:
            raise ValueError(f"vocab {self.vocab} is too small for {self.classes} classes x {self.keywords_per_class} "
                             f"keywords plus padding and filler words: give vocab >= "
                             f"{self.classes * self.keywords_per_class + 2}")
        return self


@builtin("keyword_tokens", KeywordTokensConfig)
def load_keyword_tokens(cfg: KeywordTokensConfig, seed: int, base_dir: Path | None) -> Loaded:
    """Generate ``samples`` sequences ``(length,)`` of int32 ids and their class labels (about as many of each)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 31])
    n, length, k = cfg.samples, cfg.length, cfg.classes
    keywords = 1 + np.arange(k * cfg.keywords_per_class).reshape(k, cfg.keywords_per_class)
    first_filler = 1 + k * cfg.keywords_per_class
    y = np.arange(n) % k
    rng.shuffle(y)
    x = rng.integers(first_filler, cfg.vocab, size=(n, length))
    used = rng.integers(max(4, length // 2), length + 1, size=n)  # the rest is padding (id 0)
    x[np.arange(length)[None, :] >= used[:, None]] = 0
    other = (y + rng.integers(1, k, size=n)) % k
    for i in range(n):
        pos = rng.choice(int(used[i]), size=3, replace=False)
        x[i, pos[:2]] = rng.choice(keywords[y[i]], size=2)
        x[i, pos[2]] = rng.choice(keywords[other[i]])
    names = [f"command_{c}" for c in range(k)]
    return Loaded("keyword_tokens", x.astype(np.int32), y.astype(np.int64), None, None, names)
