"""The ONNX rewrite of tf2onnx's GELU and layer-norm spellings: same numbers, the fusable ops, nothing else touched."""

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from defax_keras.export.onnx_fusions import fuse_for_runtimes  # noqa: E402

WIDTH = 6


def _constant(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _tf2onnx_gelu(x):
    """tf.nn.gelu as tf2onnx writes it: (0.5 x) (1 - erf(-x / sqrt 2))."""
    return [
        helper.make_node("Mul", ["half", x], ["g_half"]),
        helper.make_node("Neg", [x], ["g_neg"]),
        helper.make_node("Mul", ["g_neg", "inv_sqrt2"], ["g_scaled"]),
        helper.make_node("Erf", ["g_scaled"], ["g_erf"]),
        helper.make_node("Sub", ["one", "g_erf"], ["g_erfc"]),
        helper.make_node("Mul", ["g_half", "g_erfc"], ["gelu"]),
    ], "gelu"


def _tf2onnx_layer_norm(x, mean_op="GlobalAveragePool"):
    """Keras' LayerNormalization as tf2onnx writes it (moments, rsqrt, x m + (beta - mean m))."""

    def mean(source, out):
        if mean_op == "GlobalAveragePool":
            return helper.make_node("GlobalAveragePool", [source], [out])
        return helper.make_node("ReduceMean", [source], [out], axes=[-1], keepdims=1)

    return [
        mean(x, "ln_mean"),
        helper.make_node("Neg", ["ln_mean"], ["ln_neg"]),
        helper.make_node("Sub", [x, "ln_mean"], ["ln_diff"]),
        helper.make_node("Mul", ["ln_diff", "ln_diff"], ["ln_sq"]),
        mean("ln_sq", "ln_var"),
        helper.make_node("Add", ["ln_var", "eps"], ["ln_var_eps"]),
        helper.make_node("Sqrt", ["ln_var_eps"], ["ln_std"]),
        helper.make_node("Reciprocal", ["ln_std"], ["ln_inv"]),
        helper.make_node("Mul", ["ln_inv", "gamma"], ["ln_m"]),
        helper.make_node("Mul", [x, "ln_m"], ["ln_xm"]),
        helper.make_node("Mul", ["ln_neg", "ln_m"], ["ln_mm"]),
        helper.make_node("Add", ["ln_mm", "beta"], ["ln_shift"]),
        helper.make_node("Add", ["ln_xm", "ln_shift"], ["ln"]),
    ], "ln"


def _model(mean_op="GlobalAveragePool", extra_output=None):
    """x [N, 5, WIDTH] -> layer norm -> GELU -> y; `extra_output` also exposes an intermediate."""
    rng = np.random.default_rng(0)
    norm, normed = _tf2onnx_layer_norm("x", mean_op)
    gelu, out = _tf2onnx_gelu(normed)
    constants = [
        _constant("half", 0.5), _constant("inv_sqrt2", 1 / math.sqrt(2)), _constant("one", 1.0), _constant("eps", 1e-5),
        _constant("gamma", rng.normal(1, 0.3, (1, 1, WIDTH))), _constant("beta", rng.normal(0, 0.3, (1, 1, WIDTH))),
        _constant("unrelated", [2.0]),  # read by no node: dropped with the replaced constants
    ]
    outputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, 5, WIDTH])]
    if extra_output:
        outputs.append(helper.make_tensor_value_info(extra_output, TensorProto.FLOAT, [None, 5, 1]))
    graph = helper.make_graph(norm + gelu, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5, WIDTH])], outputs, constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _reference(x, model):
    """NumPy: LayerNormalization over the last axis, then exact GELU."""
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    mean = x.mean(-1, keepdims=True)
    normed = (x - mean) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * values["gamma"] + values["beta"]
    erf = np.vectorize(math.erf)
    return 0.5 * normed * (1 + erf(normed / math.sqrt(2)))


def _run(model, x):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written
    return ort.InferenceSession(model.SerializeToString(), options).run(None, {"x": x})


@pytest.mark.parametrize("mean_op", ["GlobalAveragePool", "ReduceMean"])
def test_gelu_and_layer_norm_become_the_fusable_ops_with_the_same_numbers(mean_op):
    x = np.random.default_rng(1).normal(0, 3, (4, 5, WIDTH)).astype(np.float32)
    model = _model(mean_op)
    before = _run(model, x)[0]
    counts = fuse_for_runtimes(model)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert counts == {"gelu": 1, "layer_norm": 1}
    assert ops == ["LayerNormalization", "Mul", "Mul", "Erf", "Add", "Mul"]  # GELU: (0.5 x)(erf(x c) + 1)
    layer_norm = model.graph.node[0]
    assert {a.name: helper.get_attribute_value(a) for a in layer_norm.attribute}["axis"] == (2 if mean_op == "GlobalAveragePool" else -1)
    scale = next(n for n in model.graph.node if n.output[0] == "g_scaled")
    assert list(scale.input) == ["ln", "inv_sqrt2"]  # x itself, not -x
    names = {i.name for i in model.graph.initializer}
    assert "gamma" not in names and "eps" not in names and "unrelated" not in names  # replaced constants are gone
    after = _run(model, x)[0]
    np.testing.assert_allclose(before, _reference(x, _model(mean_op)), atol=1e-5)
    np.testing.assert_allclose(after, _reference(x, _model(mean_op)), atol=1e-5)


def test_a_layer_norm_whose_zero_shift_was_folded_away_is_fused_too():
    """Fresh weights (beta = 0): the converter drops `+ beta`, leaving `x m + (-mean m)`."""
    model = _model()
    nodes = [n for n in model.graph.node if n.output[0] != "ln_shift"]
    for node in nodes:
        if node.output[0] == "ln":
            node.input[:] = ["ln_xm", "ln_mm"]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for init in model.graph.initializer:
        if init.name == "beta":
            init.CopyFrom(_constant("beta", np.zeros((1, 1, WIDTH))))
    x = np.random.default_rng(2).normal(0, 3, (2, 5, WIDTH)).astype(np.float32)
    expected = _reference(x, model)
    assert fuse_for_runtimes(model) == {"gelu": 1, "layer_norm": 1}
    assert model.graph.node[0].op_type == "LayerNormalization"
    np.testing.assert_allclose(_run(model, x)[0], expected, atol=1e-5)


def test_patterns_whose_pieces_are_used_elsewhere_are_left_alone():
    model = _model(extra_output="ln_var")  # the variance is also an output: fusing would lose it
    model.graph.node.append(helper.make_node("Identity", ["g_erf"], ["erf_copy"]))  # erf read twice
    model.graph.output.append(helper.make_tensor_value_info("erf_copy", TensorProto.FLOAT, [None, 5, WIDTH]))
    ops = [n.op_type for n in model.graph.node]
    assert fuse_for_runtimes(model) == {"gelu": 0, "layer_norm": 0}
    assert [n.op_type for n in model.graph.node] == ops


def test_gelu_with_another_constant_is_not_rewritten():
    model = _model()
    for init in model.graph.initializer:
        if init.name == "inv_sqrt2":
            init.CopyFrom(_constant("inv_sqrt2", 0.8))  # not GELU: 1 - erf(-0.8x) is still 1 + erf(0.8x), but no fusion matches it
    assert fuse_for_runtimes(model)["gelu"] == 0


def test_older_opsets_keep_their_layer_norms():
    model = _model()
    model.opset_import[0].version = 15
    assert fuse_for_runtimes(model) == {"gelu": 1, "layer_norm": 0}
