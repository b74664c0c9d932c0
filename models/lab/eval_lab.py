"""EVALUATION.md section 1 for `make eval`: the shipped container memory-exhaustion models
on the scenario-lab runs that `make models` held out (models/cards/lab-split.json).

Called by models/eval/augur_eval/harness.py as `run(emit)`; every row is printed as
`{"eval": "lab", ...}`: per split (`heldout_runs`: unseen runs of the families trained on;
`heldout_families`: families and parameter ranges never trained on), one row for the
shipped models (alarms from the model with `operating_threshold` in models/manifest.toml,
at that threshold; Brier/ECE per horizon) and one per baseline (static threshold: usage >
90 % of the limit; linear extrapolation of usage over 5 min to the limit within the
decision horizon; their 0/1 alarm is their probability for Brier/ECE).

Nothing is retrained: the ONNX files run as shipped, on features re-exported by the
aggregator (`augur-aggregator features export`). Skips with a note on stderr when the
models, the dataset or the aggregator binary are not there.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

TRAIN_DIR = Path(__file__).resolve().parents[1] / "train"
if str(TRAIN_DIR) not in sys.path:
    sys.path.insert(0, str(TRAIN_DIR))

from augur_train import shipped  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(emit) -> dict | None:
    started = time.perf_counter()
    try:
        rows = shipped.metric_rows()
    except (shipped.Unavailable, FileNotFoundError) as e:
        log(f"eval lab: skipped, {e}")
        return None
    out = {}
    for row in rows:
        emit(row)
        out[f"{row['split']}/{row['detector']}"] = row
    log(f"eval lab: {len(rows)} rows in {time.perf_counter() - started:.1f} s")
    return out


if __name__ == "__main__":
    import json

    run(lambda row: print(json.dumps({"eval": "lab", **row}), flush=True))
