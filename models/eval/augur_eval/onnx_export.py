"""Exports a fitted shipped detector's per-step error as an ONNX graph and checks it.

The graph computes, for a float32 batch ``x`` of shape (n, d), an ``error`` of shape (n, 1)
(rows x one column, the manifest's output convention)::

    z = (x - mean) / std
    r = z @ residual_projection          # (I - V V^T), symmetric
    error = sum((r / residual_std) ** 2, axis=1)

The EWMA smoothing is stateful and stays outside the graph; its half-life, the train alarm
threshold and the other parameters travel in the model's ``metadata_props``.
The export is a demonstration that the fitted form is plain ONNX: per-host models are learned
online by the aggregator, so nothing exported here is shipped in the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import data
from .detectors import ResidualEwma

OPSET = 17


def to_onnx(det: ResidualEwma, metadata: dict | None = None) -> onnx.ModelProto:
    d = len(det.mean_)
    resid_op = np.eye(d) - det.components_.T @ det.components_
    inits = [
        numpy_helper.from_array(det.mean_.astype(np.float32), "mean"),
        numpy_helper.from_array(det.std_.astype(np.float32), "std"),
        numpy_helper.from_array(resid_op.astype(np.float32), "residual_projection"),
        numpy_helper.from_array(det.residual_std_.astype(np.float32), "residual_std"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "sum_axis"),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["z"]),
        helper.make_node("MatMul", ["z", "residual_projection"], ["residual"]),
        helper.make_node("Div", ["residual", "residual_std"], ["scaled"]),
        helper.make_node("Mul", ["scaled", "scaled"], ["squared"]),
        helper.make_node("ReduceSum", ["squared", "sum_axis"], ["error"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "augur_residual_error",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", d])],
        [helper.make_tensor_value_info("error", TensorProto.FLOAT, ["n", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="augur-eval")
    model.ir_version = 8
    meta = {
        "detector": "augur residual-ewma v1 (models/eval/DETECTOR.md)",
        "variance": det.variance,
        "components": int(det.components_.shape[0]),
        "residual_floor": det.residual_floor,
        "halflife_seconds": det.halflife_minutes * 60.0,
        **(metadata or {}),
    }
    helper.set_model_props(model, {k: str(v) for k, v in meta.items()})
    onnx.checker.check_model(model)
    return model


def check_with_onnxruntime(model: onnx.ModelProto, det: ResidualEwma, x: np.ndarray) -> float:
    """Largest relative difference between ONNX Runtime and numpy on ``x``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["error"], {"x": x.astype(np.float32)})[0][:, 0].astype(np.float64)
    want = det.step_error(x)
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)))


def export_smd(out_dir: str | Path) -> list[Path]:
    """Fits the shipped detector on each SMD machine's train split and writes one .onnx each."""
    from .metrics import train_alarm_threshold

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for series in data.load_smd():
        det = ResidualEwma(step_minutes=series.step_minutes)
        train_score, _ = det.fit_score(series.train_x, series.test_x[:1])
        thr = train_alarm_threshold(series.train_t, train_score, series.step_minutes)
        model = to_onnx(det, {"host": series.name, "train_alarm_threshold": thr, "columns": ",".join(series.columns)})
        diff = check_with_onnxruntime(model, det, series.test_x)
        path = out / f"residual-ewma-{series.name}.onnx"
        onnx.save(model, path)
        written.append(path)
        print(f"eval: wrote {path} (ONNX Runtime vs numpy: max rel diff {diff:.1e})", file=sys.stderr)
    return written
