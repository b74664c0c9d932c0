#!/usr/bin/env python3
"""Writes the forecast fixtures of the aggregator's tests (aggregator/src/forecast/onnx_quantile.rs):

- ``forecast-test.onnx`` + ``manifest.toml``: a quantile model in the exact format of the
  shipped one (models/forecast/train.py: same inputs, same joined ONNX graph), trained on
  synthetic series that alternate around a level, so a test can show it selected where it
  wins (an alternation, which no built-in candidate continues) and not where it loses (a
  clean line). Not a product model.
- ``inputs.json``: input rows computed by models/forecast/quantile.py, which the Rust
  input code must reproduce.

    $HOME/.cache/augur/venv/bin/python models/tools/make_forecast_test_model.py
"""

import hashlib
import json
import math
import pathlib
import sys

import lightgbm
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "models" / "forecast"))

import quantile as qf  # noqa: E402
import train as ftrain  # noqa: E402

OUT = REPO / "aggregator/tests/fixtures/models/forecast"
SEED = 5


def main():
    rng = np.random.default_rng(SEED)
    xs, zs = [], []
    for _ in range(300):
        level, amp = rng.uniform(-100, 100), rng.uniform(0.5, 20)
        y = level + amp * np.where(np.arange(120) % 2 == 0, 1.0, -1.0) + rng.normal(0, 0.02 * amp, 120)
        for o in range(qf.LAGS, 119):
            for h in (1, 2, 3):
                if o + h - 1 < len(y):
                    lv, sc = qf.level_scale(y, o)
                    xs.append(qf.features(y, o, h))
                    zs.append((y[o + h - 1] - lv) / sc)
    x, z = np.asarray(xs, dtype=np.float32), np.asarray(zs)
    params = dict(ftrain.PARAMS, n_estimators=40)
    models = [lightgbm.LGBMRegressor(objective="quantile", alpha=q, random_state=SEED, **params).fit(x, z) for q in qf.QUANTILES]
    schema = qf.schema("test fixture: trained on alternating series only")
    model = ftrain.joined_onnx(models, len(qf.FEATURES), schema, "augur test fixture (models/tools/make_forecast_test_model.py)")
    blob = model.SerializeToString()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "forecast-test.onnx").write_bytes(blob)
    sha = hashlib.sha256(blob).hexdigest()
    (OUT / "manifest.toml").write_text(
        "\n".join(
            [
                "# Test fixture written by models/tools/make_forecast_test_model.py; format in models/README.md.",
                "format = 1",
                "",
                "[[model]]",
                'name = "forecast-test"',
                'version = "test.1"',
                'kind = "forecast"',
                'file = "forecast-test.onnx"',
                f'sha256 = "{sha}"',
                'resource_kind = "series"',
                "",
                "[model.schema]",
                f"version = {qf.SCHEMA_VERSION}",
                "features = [" + ", ".join(json.dumps(f) for f in qf.FEATURES) + "]",
                'windows = { "lags" = "' + str(qf.LAGS) + '" }',
                "",
                "[model.schema.output]",
                f'tensor = "{qf.OUTPUT_TENSOR}"',
                "columns = [" + ", ".join(json.dumps(c) for c in qf.OUTPUT_COLUMNS) + "]",
                f"description = {json.dumps(schema['output']['description'])}",
                "",
            ]
        )
    )
    y = [round(100 + 10 * math.sin(i / 3.0) + 0.37 * i + (i % 5) * 0.9, 6) for i in range(60)]
    cases = []
    for o, h in ((24, 1), (30, 6), (59, 60), (60, 2)):
        lv, sc = qf.level_scale(np.asarray(y), o)
        cases.append({"origin": o, "lead": h, "level": lv, "scale": sc, "features": [float(v) for v in qf.features(np.asarray(y), o, h)]})
    (OUT / "inputs.json").write_text(json.dumps({"about": "models/tools/make_forecast_test_model.py from models/forecast/quantile.py", "y": y, "cases": cases}, indent=1) + "\n")
    print(f"{OUT}: forecast-test.onnx {len(blob)} bytes, sha256 {sha}; inputs.json {len(cases)} cases")


if __name__ == "__main__":
    main()
