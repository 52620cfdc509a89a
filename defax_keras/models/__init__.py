"""Models: the DeFaX cross-attention fusion and, as they land, the full models and baselines."""

from defax_keras.models.fusion import CrossAttentionFusion

__all__ = ["CrossAttentionFusion"]
