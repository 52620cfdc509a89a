"""Rewrite two TensorFlow spellings in a converted ONNX graph into the ones ONNX Runtime and OpenVINO fuse.

Why: tf2onnx translates TensorFlow op by op, and two of TensorFlow's spellings
are not the patterns the runtimes recognise, so they run as chains of
element-wise kernels over the largest activations of the network:

* GELU. `tf.nn.gelu` computes `0.5 x erfc(-x / sqrt 2)`; tf2onnx writes
  `(0.5 x) (1 - erf(-x / sqrt 2))`. OpenVINO's and ONNX Runtime's GELU fusions
  look for `(0.5 x) (1 + erf(x / sqrt 2))`, the same function (erf is odd).
  Unfused it took a quarter of `defax_tiny`'s OpenVINO time on the
  development machine (`docs/performance.md`).
* Layer normalisation. Keras' `LayerNormalization` becomes moments
  (`GlobalAveragePool` or `ReduceMean`), `Sqrt`, `Reciprocal` and four
  multiply-adds; ONNX has had `LayerNormalization` since opset 17, one kernel
  in both runtimes.

Only exact matches are rewritten (constants checked by value, every
intermediate used once), so a graph without them is left as it was; the
export's parity check then compares the rewritten file with Keras like any
other. The rewrite is local: no shapes are inferred.
"""

from __future__ import annotations

import math

import numpy as np

GELU_SCALE = 1.0 / math.sqrt(2.0)


class _Graph:
    """Producers, consumers and constants of an ONNX graph, for local pattern matching."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.numpy_helper = numpy_helper
        self.initializers = {init.name: init for init in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {out.name for out in graph.output}
        self.removed: set[str] = set()  # nodes by their first output (unique in an ONNX graph)
        self.inserted: dict[str, object] = {}  # a new node, placed where the node with this first output was

    def constant(self, name):
        """The value of an initializer or `Constant` node output, else None."""
        if name in self.initializers:
            return self.numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    return self.numpy_helper.to_array(attribute.t)
        return None

    def scalar(self, name, value, rtol=1e-6) -> bool:
        array = self.constant(name)
        return array is not None and array.size == 1 and math.isclose(float(array.reshape(())), value, rel_tol=rtol)

    def node(self, name, op_type):
        """The node producing `name` when it is an `op_type` whose output nothing else reads, else None."""
        node = self.producer.get(name)
        if node is None or node.op_type != op_type or node.output[0] in self.removed:
            return None
        if len(self.consumers.get(name, [])) != 1 or name in self.outputs:
            return None
        return node

    def other_input(self, node, name):
        """The input of a two-input `node` that is not `name` (None when both or neither are)."""
        if len(node.input) != 2 or list(node.input).count(name) != 1:
            return None
        return node.input[1] if node.input[0] == name else node.input[0]

    def add_initializer(self, name, array) -> str:
        self.graph.initializer.append(self.numpy_helper.from_array(np.asarray(array), name))
        return name

    def remove(self, *nodes) -> None:
        self.removed.update(node.output[0] for node in nodes)

    def replace(self, node, new) -> None:
        self.inserted[node.output[0]] = new

    def commit(self) -> None:
        """The graph's nodes in their order, removed ones dropped and new ones in the place of those they replace."""
        from onnx import NodeProto

        nodes = []
        for node in self.graph.node:
            key = node.output[0]
            if key in self.inserted:
                nodes.append(self.inserted[key])
            if key not in self.removed:
                copy = NodeProto()
                copy.CopyFrom(node)
                nodes.append(copy)
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        used = _names_read(self.graph)
        for init in [init for init in self.graph.initializer if init.name not in used]:  # the replaced patterns' constants
            self.graph.initializer.remove(init)


def _names_read(graph) -> set[str]:
    """Every tensor name a node of `graph` or of its subgraphs reads, and the graph's outputs."""
    from onnx import AttributeProto

    names = {out.name for out in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.type == AttributeProto.GRAPH else list(attribute.graphs)
            for subgraph in subgraphs:
                names |= _names_read(subgraph)
    return names


def _fuse_gelu(g: _Graph) -> int:
    """`(0.5 x) (1 - erf(-x c))` -> `(0.5 x) (1 + erf(x c))`, c = 1/sqrt 2, in place; the count rewritten."""
    count = 0
    for erf in [n for n in g.graph.node if n.op_type == "Erf"]:
        readers = g.consumers.get(erf.output[0], [])
        subtract = readers[0] if len(readers) == 1 and readers[0].op_type == "Sub" else None
        if subtract is None or subtract.input[1] != erf.output[0] or not g.scalar(subtract.input[0], 1.0):
            continue
        scale = g.node(erf.input[0], "Mul")
        if scale is None:
            continue
        negated_index = next((i for i, name in enumerate(scale.input) if g.node(name, "Neg") is not None), None)
        if negated_index is None or not g.scalar(scale.input[1 - negated_index], GELU_SCALE):
            continue
        negate = g.node(scale.input[negated_index], "Neg")
        x = negate.input[0]
        product = g.consumers.get(subtract.output[0], [])
        if len(product) != 1 or product[0].op_type != "Mul":
            continue
        half = g.producer.get(g.other_input(product[0], subtract.output[0]) or "")
        if half is None or half.op_type != "Mul" or g.other_input(half, x) is None or not g.scalar(g.other_input(half, x), 0.5):
            continue
        scale.input[negated_index] = x
        subtract.op_type = "Add"
        subtract.input[:] = [erf.output[0], subtract.input[0]]
        g.remove(negate)
        count += 1
    return count


def _mean_axes(g: _Graph, node, x):
    """What `node` averages `x` over, when it is a layer-norm moment: `"from 2"` (GlobalAveragePool), a
    ReduceMean's axes (kept dims), else None."""
    if node is None or list(node.input)[:1] != [x]:
        return None
    if node.op_type == "GlobalAveragePool":
        return "from 2"
    if node.op_type == "ReduceMean":
        attributes = {a.name: a for a in node.attribute}
        axes = list(attributes["axes"].ints) if "axes" in attributes else None
        if axes is None and len(node.input) == 2:
            constant = g.constant(node.input[1])
            axes = None if constant is None else [int(a) for a in constant.ravel()]
        keep = attributes["keepdims"].i if "keepdims" in attributes else 1
        return tuple(axes) if axes and keep == 1 else None
    return None


def _layer_norm_axis(axes, gamma) -> int | None:
    """The `LayerNormalization` axis that averages over `axes` when the scale `gamma` has the input's rank
    (Keras broadcasts it as `[1, ..., 1, C]`): the last axis only; None otherwise."""
    if gamma.ndim < 2 or any(d != 1 for d in gamma.shape[:-1]):
        return None
    if axes == "from 2":
        return 2 if gamma.ndim == 3 else None
    return -1 if axes in ((-1,), (gamma.ndim - 1,)) else None


def _fuse_layer_norm(g: _Graph) -> int:
    """`x m + (beta - mean m)`, `m = gamma / sqrt(var + eps)` -> `LayerNormalization(x, gamma, beta)`; the count."""
    count = 0
    for reciprocal in [n for n in g.graph.node if n.op_type == "Reciprocal"]:
        root = g.node(reciprocal.input[0], "Sqrt")
        add_eps = root and g.node(root.input[0], "Add")
        if add_eps is None:
            continue
        eps_index = next((i for i, name in enumerate(add_eps.input) if g.constant(name) is not None and g.constant(name).size == 1), None)
        if eps_index is None:
            continue
        epsilon = float(g.constant(add_eps.input[eps_index]).reshape(()))
        moment = add_eps.input[1 - eps_index]
        variance = g.node(moment, "GlobalAveragePool") or g.node(moment, "ReduceMean")
        squared = variance and g.node(variance.input[0], "Mul")
        if squared is None or squared.input[0] != squared.input[1]:
            continue
        difference = g.producer.get(squared.input[0])
        if difference is None or difference.op_type != "Sub" or any(n is not squared for n in g.consumers.get(difference.output[0], [])):
            continue
        x, mean_name = difference.input
        mean = g.producer.get(mean_name)
        axes = _mean_axes(g, mean, x)
        if axes is None or _mean_axes(g, variance, squared.output[0]) != axes:
            continue
        scale = g.consumers.get(reciprocal.output[0], [])
        if len(scale) != 1 or scale[0].op_type != "Mul":
            continue
        scale = scale[0]
        gamma_name = g.other_input(scale, reciprocal.output[0])
        gamma = None if gamma_name is None else g.constant(gamma_name)
        users = g.consumers.get(scale.output[0], [])
        negate = [n for n in g.consumers.get(mean_name, []) if n.op_type == "Neg"]
        if gamma is None or len(users) != 2 or len(negate) != 1 or len(g.consumers.get(mean_name, [])) != 2:
            continue
        scaled_x = next((n for n in users if n.op_type == "Mul" and g.other_input(n, scale.output[0]) == x), None)
        scaled_mean = next((n for n in users if n.op_type == "Mul" and g.other_input(n, scale.output[0]) == negate[0].output[0]), None)
        if scaled_x is None or scaled_mean is None or len(g.consumers.get(negate[0].output[0], [])) != 1:
            continue
        shift = g.consumers.get(scaled_mean.output[0], [])
        if len(shift) != 1 or shift[0].op_type != "Add":
            continue
        shift = shift[0]
        if g.other_input(shift, scaled_mean.output[0]) == scaled_x.output[0]:
            total, beta = shift, np.zeros_like(gamma)  # a zero beta (fresh weights) is folded away by the converter
        else:
            beta_name = g.other_input(shift, scaled_mean.output[0])
            beta = None if beta_name is None else g.constant(beta_name)
            total = g.consumers.get(shift.output[0], [])
            if beta is None or len(total) != 1 or total[0].op_type != "Add":
                continue
            total = total[0]
        summed = scaled_mean.output[0] if total is shift else shift.output[0]
        if len(g.consumers.get(scaled_x.output[0], [])) != 1 or sorted(total.input) != sorted([scaled_x.output[0], summed]):
            continue
        axis = _layer_norm_axis(axes, gamma)
        if axis is None or beta.shape != gamma.shape:
            continue  # a layer norm over the last axis only; its scale and shift per channel
        width = gamma.shape[-1]
        from onnx import helper

        prefix = total.output[0].rsplit(":", 1)[0]
        fused = helper.make_node(
            "LayerNormalization",
            [x, g.add_initializer(f"{prefix}/gamma", gamma.reshape(width).astype(np.float32)), g.add_initializer(f"{prefix}/beta", beta.reshape(width).astype(np.float32))],
            [total.output[0]],
            name=f"{prefix}/LayerNormalization",
            axis=axis,
            epsilon=epsilon,
        )
        g.remove(mean, negate[0], difference, squared, variance, add_eps, root, reciprocal, scale, scaled_x, scaled_mean, shift, total)
        g.replace(total, fused)
        count += 1
    return count


def fuse_for_runtimes(model) -> dict[str, int]:
    """Rewrite `model`'s graph in place; how many GELUs and layer norms were rewritten.

    Needs opset >= 17 for `LayerNormalization` (older graphs keep their layer norms).
    """
    g = _Graph(model.graph)
    counts = {"gelu": _fuse_gelu(g)}
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    counts["layer_norm"] = _fuse_layer_norm(g) if opset >= 17 else 0
    g.commit()
    return counts
