"""Taps: how a detector's one forward pass exposes its named intermediates.

Each `ImageClassifier` subclass wires its pass once, in `_forward(layers,
images, tap)`, and calls `tap(name, tensor)` where an intermediate that
explanations or calibration need appears:

| name | tensor |
|---|---|
| `local` | a convolutional feature map `[B, h, w, C]` |
| `global` | transformer tokens as their square grid `[B, h, w, C]` |
| `attention` | cross-attention shares per local region `[B, h, w]` (DeFaX) |
| `logits` | pre-softmax scores `[B, 2]`, after the calibration temperature |

A tap returns the tensor the pass continues with. The constructor passes
`Tap()`, which wants nothing and changes nothing, so the saved graph is the
plain detector; the model's `intermediate_model`, `feature_model`, ...
re-run `_forward` on the model's own layers (weights shared) with a tap that
records, or reroutes a map through a layer of its own (what Grad-CAM needs).
"""

from __future__ import annotations

import math

import keras

TARGETS = ("local", "global")
"""Intermediates that are spatial feature maps (class-activation map targets)."""
FEATURE_LAYER = "feature_map"
"""The layer a feature model routes its target map through (what tf-keras-vis is given)."""


class Tap:
    """Records the intermediates it wants; passes every tensor on unchanged.

    Args:
        names: the intermediates to record; `None` records all (a probe).

    Example:
        >>> tap = Tap(["logits"])
        >>> tap.wants("logits"), tap.wants("local")
        (True, False)
        >>> tap("logits", 3.0), tap.outputs
        (3.0, {'logits': 3.0})
    """

    def __init__(self, names=()):
        self.names = None if names is None else frozenset(names)
        self.outputs: dict = {}

    def wants(self, name: str) -> bool:
        """Whether `_forward` should build `name` (for intermediates that cost extra graph)."""
        return self.names is None or name in self.names

    def __call__(self, name: str, tensor):
        if self.wants(name):
            self.outputs[name] = tensor
        return tensor


class FeatureMapTap(Tap):
    """Routes the `target` map through a layer named `feature_map`, and records it and the logits.

    With `offset=True` a second model input (`self.inputs`) is added to the
    map: the gradient with respect to it is the gradient with respect to the
    map, on any backend.
    """

    def __init__(self, target: str, offset: bool = False):
        super().__init__((target, "logits"))
        self.target = target
        self.offset = offset
        self.inputs: list = []

    def __call__(self, name: str, tensor):
        if name != self.target:
            return super().__call__(name, tensor)
        tensor = super().__call__(name, keras.layers.Identity(name=FEATURE_LAYER)(tensor))
        if not self.offset:
            return tensor
        offset = keras.Input(shape=tuple(tensor.shape[1:]), name="map_offset")
        self.inputs.append(offset)
        return keras.layers.Add(name="map_with_offset")([tensor, offset])


def square_side(count: int) -> int | None:
    """`sqrt(count)` when `count` is a square number (a token grid), else `None`."""
    side = int(round(math.sqrt(count)))
    return side if side * side == count else None


def tap_tokens(tap: Tap, name: str, tokens):
    """Offer tokens `[B, N, C]` to `tap` as their square grid `[B, h, w, C]`; returns the tokens to continue with.

    Tokens that are not a square grid, or that the tap does not want, pass
    unchanged (no reshape is added to the graph).
    """
    if len(tokens.shape) != 3 or not tap.wants(name) or not square_side(tokens.shape[1]):
        return tokens
    side = square_side(tokens.shape[1])
    grid = keras.layers.Reshape((side, side, tokens.shape[-1]), name="tokens_to_map")(tokens)
    grid = tap(name, grid)
    return keras.layers.Reshape((side * side, tokens.shape[-1]), name="map_to_tokens")(grid)
