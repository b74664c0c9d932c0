#!/usr/bin/env python3
"""Writes the tiny ONNX classifiers the aggregator's model tests load.

Run once with the pipeline's venv and commit the output; tests never need Python:

    $HOME/.cache/augur/venv/bin/python models/tools/make_test_models.py

Writes into aggregator/tests/fixtures/models/ (or the directory given as the first argument):
- logreg.onnx: a scikit-learn LogisticRegression over 5 features;
- lgbm.onnx: a 20-tree LightGBM classifier over the same 5 features;
- manifest.toml: the manifest describing both (format documented in models/README.md, "Manifest");
- expected.json: a few fixed input rows and the probabilities ONNX Runtime (Python) gave for them.

Both models are exported with zipmap disabled, so the `probabilities` output is a plain float tensor
[n_rows, 2] (columns p_normal, p_failure), and carry their feature schema as JSON in the ONNX
metadata_props under `augur.feature_schema`. Everything is seeded, so re-running gives the same models.
"""

import hashlib
import json
import pathlib
import sys

import lightgbm
import numpy as np
import onnx
import onnxruntime
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType as MltFloatTensorType
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression

SEED = 7
SCHEMA_KEY = "augur.feature_schema"
# The schema both fixtures share; mirrors what a failure-probability model of the real pipeline carries.
SCHEMA = {
    "version": 1,
    "features": [
        "mem_headroom_ratio",
        "mem_slope_5m",
        "mem_psi_some_avg10",
        "cpu_throttled_ratio_30s",
        "pids_headroom_ratio",
    ],
    "windows": {"short": "30s", "medium": "5m", "long": "30m"},
    "output": {
        "tensor": "probabilities",
        "columns": ["p_normal", "p_failure"],
        "description": "per row: P(no failure within the horizon), P(failure within the horizon)",
    },
}
N_FEATURES = len(SCHEMA["features"])


def training_data():
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-1.0, 1.0, size=(2000, N_FEATURES)).astype(np.float32)
    logit = -2.5 * x[:, 0] + 1.5 * x[:, 1] + 1.0 * x[:, 2] * x[:, 3] - 0.8 * x[:, 4]
    y = (rng.uniform(size=len(x)) < 1.0 / (1.0 + np.exp(-3.0 * logit))).astype(np.int64)
    return x, y


def fixed_rows():
    """Rows the tests feed through the Rust side; include edges of the training range and beyond."""
    rows = [
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [1.0, -1.0, 0.5, -0.5, 0.25],
        [-1.0, 1.0, 1.0, 1.0, -1.0],
        [0.3, 0.1, -0.7, 0.9, 0.0],
        [-0.2, 0.4, 0.6, -0.8, 0.5],
        [2.0, -3.0, 0.0, 0.0, 1.5],
        [-0.05, 0.05, -0.05, 0.05, -0.05],
        [0.75, 0.75, -0.75, -0.75, 0.75],
    ]
    return np.asarray(rows, dtype=np.float32)


def with_schema(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    model.doc_string = f"augur test fixture {name} (models/tools/make_test_models.py)"
    model.graph.name = f"augur_test_{name}"  # converters default to a random UUID; fixed names keep the bytes stable
    entry = model.metadata_props.add()
    entry.key = SCHEMA_KEY
    entry.value = json.dumps(SCHEMA, sort_keys=True)
    onnx.checker.check_model(model)
    return model


def logreg_model(x, y) -> onnx.ModelProto:
    clf = LogisticRegression(C=1.0, max_iter=500, random_state=SEED).fit(x, y)
    model = to_onnx(
        clf,
        initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 15, "ai.onnx.ml": 3},
    )
    return with_schema(model, "logreg")


def lgbm_model(x, y) -> onnx.ModelProto:
    clf = lightgbm.LGBMClassifier(
        n_estimators=20,
        num_leaves=8,
        learning_rate=0.2,
        random_state=SEED,
        deterministic=True,
        force_row_wise=True,
        n_jobs=1,
        verbose=-1,
    ).fit(x, y)
    model = convert_lightgbm(
        clf,
        initial_types=[("features", MltFloatTensorType([None, N_FEATURES]))],
        zipmap=False,
        target_opset=15,
    )
    return with_schema(model, "lgbm")


def onnx_probabilities(path: pathlib.Path, rows: np.ndarray) -> list:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"features": rows})
    return [[float(p) for p in row] for row in probabilities]


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string of ASCII text is a valid TOML basic string


def manifest_entry(name, version, file, sha256) -> str:
    s = SCHEMA
    lines = [
        "[[model]]",
        f"name = {toml_str(name)}",
        f"version = {toml_str(version)}",
        'kind = "failure_probability"',
        f"file = {toml_str(file)}",
        f"sha256 = {toml_str(sha256)}",
        'resource_kind = "container"',
        'failure_type = "memory_exhaustion"',
        "horizon_s = 30",
        "",
        "[model.schema]",
        f"version = {s['version']}",
        "features = [" + ", ".join(toml_str(f) for f in s["features"]) + "]",
        "windows = { " + ", ".join(f"{k} = {toml_str(v)}" for k, v in sorted(s["windows"].items())) + " }",
        "",
        "[model.schema.output]",
        f"tensor = {toml_str(s['output']['tensor'])}",
        "columns = [" + ", ".join(toml_str(c) for c in s["output"]["columns"]) + "]",
        f"description = {toml_str(s['output']['description'])}",
        "",
    ]
    return "\n".join(lines)


def expected_json(expected) -> str:
    """JSON with one row per line, so a diff of the fixture shows which value moved."""

    def rows(rs, indent):
        return "[\n" + ",\n".join(indent + json.dumps(r) for r in rs) + "\n" + indent[:-2] + "]"

    models = ",\n".join(
        f'    {json.dumps(name)}: {{"file": {json.dumps(m["file"])}, "probabilities": {rows(m["probabilities"], "      ")}}}'
        for name, m in expected["models"].items()
    )
    return (
        "{\n"
        f'  "features": {json.dumps(expected["features"])},\n'
        f'  "rows": {rows(expected["rows"], "    ")},\n'
        f'  "models": {{\n{models}\n  }}\n'
        "}\n"
    )


def main():
    root = pathlib.Path(__file__).resolve().parents[2]
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else root / "aggregator/tests/fixtures/models"
    out.mkdir(parents=True, exist_ok=True)
    x, y = training_data()
    rows = fixed_rows()

    models = [("test-logreg", "1.0.0", "logreg.onnx", logreg_model(x, y)),
              ("test-lgbm", "1.0.0", "lgbm.onnx", lgbm_model(x, y))]
    manifest = [
        "# Test fixture manifest, written by models/tools/make_test_models.py; format in models/README.md.",
        "format = 1",
        "",
    ]
    expected = {"features": SCHEMA["features"], "rows": [[float(v) for v in r] for r in rows], "models": {}}
    for name, version, file, model in models:
        path = out / file
        path.write_bytes(model.SerializeToString())
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest.append(manifest_entry(name, version, file, digest))
        expected["models"][name] = {"file": file, "probabilities": onnx_probabilities(path, rows)}
        print(f"{path}: {path.stat().st_size} bytes, sha256 {digest}")

    (out / "manifest.toml").write_text("\n".join(manifest))
    (out / "expected.json").write_text(expected_json(expected))
    print(f"{out / 'manifest.toml'}, {out / 'expected.json'}")


if __name__ == "__main__":
    main()
