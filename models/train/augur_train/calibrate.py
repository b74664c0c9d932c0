"""Platt scaling on the validation split, folded into the exported ONNX graph.

The LightGBM classifier's raw score s (log-odds) is recalibrated as
``q = sigmoid(a * s + b)``, with a and b fitted by maximum likelihood on the validation
rows. In the ONNX graph the tree ensemble's post-transform is switched off, so it
outputs ``[-s, s]``; then ``Sigmoid([-s, s] * a + [-b, b]) = [1 - q, q]`` is exactly the
``probabilities`` tensor ``[p_normal, p_failure]`` the aggregator reads.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def fit_platt(score: np.ndarray, y: np.ndarray, l2: float = 1e-6, iters: int = 100) -> tuple[float, float]:
    """(a, b) maximising the likelihood of ``y`` under ``sigmoid(a * score + b)``
    (Newton's method; a tiny ridge keeps it finite on separable data)."""
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(s) == 0:
        raise ValueError("no rows to calibrate on")
    if y.min() == y.max():
        raise ValueError("calibration rows need both classes")
    X = np.stack([s, np.ones_like(s)], axis=1)
    w = np.array([1.0, 0.0])
    prev = np.inf
    for _ in range(iters):
        p = sigmoid(X @ w)
        g = X.T @ (p - y) + l2 * w
        h = (X * (p * (1 - p))[:, None]).T @ X + l2 * np.eye(2)
        step = np.linalg.solve(h, g)
        # damped Newton: halve the step while the loss does not decrease
        loss = _nll(X, y, w, l2)
        t = 1.0
        while t > 1e-6 and _nll(X, y, w - t * step, l2) > loss:
            t /= 2
        w = w - t * step
        if abs(prev - loss) < 1e-10 * max(1.0, abs(loss)):
            break
        prev = loss
    return float(w[0]), float(w[1])


def _nll(X, y, w, l2):
    z = X @ w
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w)


def apply_platt(score: np.ndarray, a: float, b: float) -> np.ndarray:
    return sigmoid(a * np.asarray(score, dtype=np.float64) + b)


def lightgbm_to_calibrated_onnx(clf, n_features: int, a: float, b: float, schema: dict, name: str, doc: str) -> onnx.ModelProto:
    """The classifier as ONNX with Platt scaling folded in: input ``features`` float
    [n, n_features] (NaN = missing), output ``probabilities`` float [n, 2] =
    [p_normal, p_failure] (calibrated), schema JSON in metadata ``augur.feature_schema``."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    raw = convert_lightgbm(clf, initial_types=[("features", FloatTensorType([None, n_features]))], zipmap=False, target_opset=15)
    trees = [n for n in raw.graph.node if n.op_type == "TreeEnsembleClassifier"]
    if len(trees) != 1:
        raise RuntimeError(f"expected one TreeEnsembleClassifier, got {[n.op_type for n in raw.graph.node]}")
    tree = trees[0]
    for attr in tree.attribute:
        if attr.name == "post_transform":
            attr.s = b"NONE"  # outputs the raw scores [-s, s]
    tree.output[:] = ["label_unused", "raw_scores"]
    nodes = [
        tree,
        helper.make_node("Mul", ["raw_scores", "platt_a"], ["scaled"], name="platt_scale"),
        helper.make_node("Add", ["scaled", "platt_b"], ["logits"], name="platt_shift"),
        helper.make_node("Sigmoid", ["logits"], ["probabilities"], name="platt_sigmoid"),
    ]
    inits = [
        numpy_helper.from_array(np.array(a, dtype=np.float32), "platt_a"),
        numpy_helper.from_array(np.array([-b, b], dtype=np.float32), "platt_b"),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 15), helper.make_opsetid("ai.onnx.ml", 1)],
        producer_name="augur models/train",
        doc_string=doc,
    )
    model.ir_version = min(model.ir_version, 8)
    entry = model.metadata_props.add()
    entry.key = "augur.feature_schema"
    entry.value = json.dumps(schema, sort_keys=True)
    cal = model.metadata_props.add()
    cal.key = "augur.calibration"
    cal.value = json.dumps({"method": "platt", "a": a, "b": b})
    onnx.checker.check_model(model)
    return model
