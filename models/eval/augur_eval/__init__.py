"""augur's anomaly-detection evaluation harness (``../shared/EVALUATION.md`` section 2).

Layout:

* ``data``       -- loaders for SMD and NAB realAWSCloudwatch from ``$AUGUR_DATA_DIR``
                    (default ``<repo>/../shared/data``); segments, onsets, train/test splits.
* ``metrics``    -- per-step AUC-PR at horizons, the debounced alarm view, the literature
                    view (best-F1, AUC-PR, AUC-ROC, composite F1); no I/O.
* ``detectors``  -- random, PCA error, Isolation Forest and the shipped ``ResidualEwma``.
* ``harness``    -- runs detectors per host and emits the JSON lines; ``EVALS`` registry
                    (``smd``, ``nab``, and the ``lab`` hook).
* ``onnx_export``-- exports a fitted shipped detector's per-step error as ONNX and checks it
                    against ONNX Runtime.

Entry point: ``models/eval/run_eval.py``.
"""
