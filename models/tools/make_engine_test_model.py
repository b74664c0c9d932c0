#!/usr/bin/env python3
"""Writes a small failure-probability model over the aggregator's real container schema,
for the aggregator's prediction tests (ingest -> features -> ONNX -> events over gRPC).

The schema comes from the aggregator itself (`augur-aggregator features schema --kind
container`), so the fixture follows the feature engine; when the features change, the
tests refuse this model with a schema mismatch until it is regenerated:

    $HOME/.cache/augur/venv/bin/python models/tools/make_engine_test_model.py \
        --aggregator $HOME/.cache/augur/target/debug/augur-aggregator

It is trained on synthetic rows where failure means memory above 80% of the limit, so a
test can drive it with a leak. It is not a product model (those come from models/train).
Writes aggregator/tests/fixtures/models/engine/{container-memory-test.onnx,manifest.toml}.
"""

import argparse
import hashlib
import json
import pathlib
import subprocess

import lightgbm
import numpy as np
import onnx
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType

SEED = 11
OUT = pathlib.Path(__file__).resolve().parents[2] / "aggregator/tests/fixtures/models/engine"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aggregator", required=True, help="augur-aggregator binary")
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    args = ap.parse_args()
    schema = json.loads(
        subprocess.run([args.aggregator, "features", "schema", "--kind", "container"], check=True, capture_output=True, text=True).stdout
    )
    names = schema["features"]
    n = len(names)
    rng = np.random.default_rng(SEED)
    rows = 4000
    x = np.full((rows, n), np.nan, dtype=np.float32)
    util = rng.uniform(0.0, 1.0, rows).astype(np.float32)
    x[:, names.index("mem_util")] = util
    x[:, names.index("mem_usage_30s_slope")] = rng.uniform(-1e5, 2e6, rows)
    y = (util > 0.8).astype(np.int64)
    clf = lightgbm.LGBMClassifier(
        n_estimators=10, num_leaves=4, learning_rate=0.3, random_state=SEED, deterministic=True,
        force_row_wise=True, n_jobs=1, verbose=-1, min_child_samples=20,
    ).fit(x, y)
    model = convert_lightgbm(clf, initial_types=[("features", FloatTensorType([None, n]))], zipmap=False, target_opset=15)
    model.graph.name = "augur_engine_test_container_memory"
    model.doc_string = "augur test fixture (models/tools/make_engine_test_model.py): P = memory above 80% of limit"
    entry = model.metadata_props.add()
    entry.key = "augur.feature_schema"
    entry.value = json.dumps(schema, sort_keys=True)
    onnx.checker.check_model(model)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "container-memory-test.onnx"
    data = model.SerializeToString()
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    windows = ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(schema["windows"].items()))
    manifest = "\n".join([
        "# Test fixture written by models/tools/make_engine_test_model.py; format in models/README.md.",
        "format = 1",
        "",
        "[[model]]",
        'name = "container-memory-test"',
        'version = "test.1"',
        'kind = "failure_probability"',
        'file = "container-memory-test.onnx"',
        f"sha256 = {json.dumps(sha)}",
        'resource_kind = "container"',
        'failure_type = "memory_exhaustion"',
        "horizon_s = 30",
        "",
        "[model.schema]",
        f"version = {schema['version']}",
        "features = [" + ", ".join(json.dumps(f) for f in names) + "]",
        "windows = { " + windows + " }",
        "",
        "[model.schema.output]",
        f"tensor = {json.dumps(schema['output']['tensor'])}",
        "columns = [" + ", ".join(json.dumps(c) for c in schema["output"]["columns"]) + "]",
        "",
    ])
    (args.out / "manifest.toml").write_text(manifest)
    print(f"{path}: {len(data)} bytes, sha256 {sha}, {n} features")


if __name__ == "__main__":
    main()
