"""CrossAttentionFusion against a NumPy implementation of the same equations."""

import textwrap

import pytest
from helpers import run_on_backend

SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile, os
    import numpy as np
    import keras
    from defax_keras.models import CrossAttentionFusion

    rng = np.random.default_rng(0)
    B, N, M, Cq, Cc, H, D = 2, 5, 7, 12, 20, 4, 16
    S = rng.normal(size=(B, N, Cq)).astype("float32")
    E = rng.normal(size=(B, M, Cc)).astype("float32")

    layer = CrossAttentionFusion(num_heads=H, fusion_dim=D, name="fusion")
    fused, scores = layer(S, E, return_attention_scores=True)
    fused, scores = keras.ops.convert_to_numpy(fused), keras.ops.convert_to_numpy(scores)
    # Random biases too, so a dropped bias would show.
    for weight in layer.weights:
        if "bias" in weight.path:
            weight.assign(rng.normal(size=weight.shape).astype("float32"))
    fused, scores = (keras.ops.convert_to_numpy(t) for t in layer(S, E, return_attention_scores=True))

    att = layer.attention
    q_k, q_b = (keras.ops.convert_to_numpy(w) for w in att.query_dense.weights)
    k_k, k_b = (keras.ops.convert_to_numpy(w) for w in att.key_dense.weights)
    v_k, v_b = (keras.ops.convert_to_numpy(w) for w in att.value_dense.weights)
    o_k, o_b = (keras.ops.convert_to_numpy(w) for w in att.output_dense.weights)
    Q = np.einsum("bnc,chd->bhnd", S, q_k) + q_b[None, :, None, :]
    K = np.einsum("bmc,chd->bhmd", E, k_k) + k_b[None, :, None, :]
    V = np.einsum("bmc,chd->bhmd", E, v_k) + v_b[None, :, None, :]
    logits = Q @ K.transpose(0, 1, 3, 2) / np.sqrt(Q.shape[-1])
    P = np.exp(logits - logits.max(-1, keepdims=True))
    P /= P.sum(-1, keepdims=True)
    A = P @ V
    F = np.einsum("bhnd,hde->bne", A, o_k) + o_b

    # .keras round trip with safe_mode=True inside a functional model.
    s_in, e_in = keras.Input((N, Cq)), keras.Input((M, Cc))
    model = keras.Model([s_in, e_in], CrossAttentionFusion(num_heads=H, fusion_dim=D, dropout=0.1)(s_in, e_in))
    path = os.path.join(tempfile.mkdtemp(), "fusion.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    roundtrip = float(np.abs(keras.ops.convert_to_numpy(model.predict([S, E], verbose=0))
                             - keras.ops.convert_to_numpy(loaded.predict([S, E], verbose=0))).max())
    print(json.dumps({
        "fused_shape": list(fused.shape), "scores_shape": list(scores.shape),
        "fused_diff": float(np.abs(fused - F).max()), "scores_diff": float(np.abs(scores - P).max()),
        "rows_sum_to_one": bool(np.allclose(scores.sum(-1), 1, atol=1e-5)),
        "roundtrip_diff": roundtrip, "config": loaded.layers[-1].get_config(),
    }))
    """
)


@pytest.mark.parametrize("backend", ["jax", "tensorflow", "torch"])
def test_cross_attention_matches_numpy(backend):
    report = run_on_backend(backend, SCRIPT)
    assert report["fused_shape"] == [2, 5, 16]
    assert report["scores_shape"] == [2, 4, 5, 7]
    assert report["fused_diff"] < 1e-5 and report["scores_diff"] < 1e-5
    assert report["rows_sum_to_one"]
    assert report["roundtrip_diff"] == 0.0
    assert {k: report["config"][k] for k in ("num_heads", "fusion_dim", "key_dim", "dropout")} == {
        "num_heads": 4, "fusion_dim": 16, "key_dim": None, "dropout": 0.1,
    }


def test_invalid_head_split():
    from defax_keras.models import CrossAttentionFusion

    with pytest.raises(ValueError, match="divisible"):
        CrossAttentionFusion(num_heads=3, fusion_dim=16)
