"""The cross-attention that joins DeFaX's two branches.

Swin's global tokens ask the questions (queries); EfficientNet's local tokens
(its final feature map, flattened) answer them (keys and values). The fused
tokens therefore carry global context enriched with the local texture evidence
each global token attended to, and the attention scores say which local regions
were used: an explanation no single-branch detector has.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="defax_keras")
class CrossAttentionFusion(keras.layers.Layer):
    """Multi-head cross-attention: queries from one token set, keys/values from another.

    ```
    Q = S Wq + bq ; K = E Wk + bk ; V = E Wv + bv        (per head, key_dim wide)
    A = softmax(Q K^T / sqrt(key_dim)) V
    F = concat_heads(A) Wo + bo                          (fusion_dim wide)
    ```

    Args:
        num_heads: attention heads (paper: 8).
        fusion_dim: width of the fused tokens; `None` keeps the query width.
        key_dim: width of each head's queries/keys/values; `None` means
            `fusion_dim // num_heads` (or the query width // num_heads).
        dropout: dropout on the attention probabilities, in training only.

    Call arguments:
        query_tokens: `[B, N, Cq]`, e.g. Swin's final tokens.
        context_tokens: `[B, M, Cc]`, e.g. EfficientNet's map as `M = H*W` tokens.
        return_attention_scores: also return the softmaxed scores `[B, heads, N, M]`.
    """

    def __init__(self, num_heads: int = 8, fusion_dim: int | None = None, key_dim: int | None = None, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if num_heads < 1:
            raise ValueError(f"num_heads must be positive, got {num_heads}")
        if fusion_dim is not None and key_dim is None and fusion_dim % num_heads:
            raise ValueError(f"fusion_dim ({fusion_dim}) must be divisible by num_heads ({num_heads}), or give key_dim")
        self.num_heads = num_heads
        self.fusion_dim = fusion_dim
        self.key_dim = key_dim
        self.dropout = dropout
        self.attention = None

    def _resolved_key_dim(self, query_width: int) -> int:
        if self.key_dim is not None:
            return self.key_dim
        width = self.fusion_dim or query_width
        if width % self.num_heads:
            raise ValueError(f"token width {width} is not divisible by num_heads={self.num_heads}; give key_dim")
        return width // self.num_heads

    def build(self, query_tokens_shape, context_tokens_shape):
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=self._resolved_key_dim(query_tokens_shape[-1]),
            dropout=self.dropout,
            output_shape=self.fusion_dim,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.attention.build(query_tokens_shape, context_tokens_shape, context_tokens_shape)

    def call(self, query_tokens, context_tokens, return_attention_scores=False, training=None):
        return self.attention(
            query_tokens,
            context_tokens,
            context_tokens,
            return_attention_scores=return_attention_scores,
            training=training,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "fusion_dim": self.fusion_dim,
            "key_dim": self.key_dim,
            "dropout": self.dropout,
        }
