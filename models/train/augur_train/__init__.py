"""Training and evaluation of augur's failure-probability models on scenario-lab runs.

Modules:

* :mod:`.data`: lab datasets, the aggregator's feature export (the only source of
  features), per-run rows and the P(failure within H) labels;
* :mod:`.split`: run-level train / validation / test split and the held-out families;
* :mod:`.metrics`: EVALUATION.md section 1 metrics (lead-time recall, false alarms per
  workload-hour, Brier, ECE);
* :mod:`.calibrate`: Platt scaling and its folding into the exported ONNX graph;
* :mod:`.evaluate`: scoring of runs by the shipped models and the two baselines, and the
  metric rows printed by ``make eval`` and written into the model cards.

``models/train/train.py`` (``make models``) ties them together.
"""
