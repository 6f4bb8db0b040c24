"""Built-in keyword transformer: ``model: {builtin: keyword_transformer, vocab: 64, dim: 32, heads: 2}``.

Token ids (int32) -> Embedding + a sinusoidal positional table added as a constant -> ``blocks`` transformer
blocks (MultiHeadAttention self-attention, residual + LayerNormalization, a ReLU feed-forward of ``ffn`` units,
residual + LayerNormalization) -> GlobalAveragePooling1D -> softmax. tfmot prunes the Embedding, the
attention's query/key/value/output projection kernels (every head kept) and the feed-forward Dense kernels.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgesparse import _tf
from edgesparse.errors import ModelError
from edgesparse.models.zoo import ZooEntry, register


class KeywordTransformerConfig(ZooEntry):
    """``model: {builtin: keyword_transformer, vocab: 64, dim: 32, heads: 2, blocks: 2, ffn: 64}``."""

    builtin: Literal["keyword_transformer"]
    vocab: int = Field(64, ge=2, le=1_000_000, description="Embedding input_dim: token ids 0..vocab-1")
    dim: int = Field(32, gt=0, le=1024, description="embedding width")
    heads: int = Field(2, ge=1, le=64)
    blocks: int = Field(2, ge=1, le=12)
    ffn: int = Field(64, gt=0, le=8192, description="feed-forward units")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


def positional_table(length: int, dim: int) -> np.ndarray:
    """The sinusoidal positional encoding ``(length, dim)`` float32 (sin on even, cos on odd features)."""
    pos = np.arange(length)[:, None].astype(np.float64)
    rate = 1.0 / np.power(10000.0, (2 * (np.arange(dim)[None, :] // 2)) / dim)
    angles = pos * rate
    table = np.where(np.arange(dim)[None, :] % 2 == 0, np.sin(angles), np.cos(angles))
    return table.astype(np.float32)


@register("keyword_transformer", KeywordTransformerConfig)
def keyword_transformer(cfg: KeywordTransformerConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """A small transformer classifier over ``(length,)`` int32 token ids."""
    if len(input_shape) != 1 or input_shape[0] is None:
        raise ModelError(f"keyword_transformer needs (sequence length,) token ids of a fixed length; the data has "
                         f"{input_shape}. Pad or cut the sequences to one length.")
    if cfg.dim % cfg.heads:
        raise ModelError(f"keyword_transformer: dim {cfg.dim} is not a multiple of heads {cfg.heads}; "
                         "choose dim = heads x key size.")
    keras = _tf.keras()
    layers = keras.layers
    length = int(input_shape[0])
    tokens = keras.Input((length,), dtype="int32", name="tokens")
    x = layers.Embedding(cfg.vocab, cfg.dim, name="embedding")(tokens)
    x = x + positional_table(length, cfg.dim)  # a constant in the graph, as users write it
    for i in range(cfg.blocks):
        a = layers.MultiHeadAttention(cfg.heads, cfg.dim // cfg.heads, dropout=cfg.dropout, name=f"mha{i}")(x, x)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"ln{i}a")(layers.Add(name=f"res{i}a")([x, a]))
        f = layers.Dense(cfg.ffn, activation="relu", name=f"ffn{i}_up")(x)
        f = layers.Dense(cfg.dim, name=f"ffn{i}_down")(f)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"ln{i}b")(layers.Add(name=f"res{i}b")([x, f]))
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(tokens, outputs, name="keyword_transformer")
