# augur: the two commands a new user needs are `make demo` and `make test`.
# Cargo's target directory lives outside the clone so repeated runs (and CI) reuse it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/augur/target
CARGO ?= cargo
BIN := $(CARGO_TARGET_DIR)/debug
RBIN := $(CARGO_TARGET_DIR)/release

.PHONY: all deps build release test lint unit e2e demo bench bench-ingest bench-storage bench-seal bench-agent bench-predict bench-react clean-demo

all: build

deps:
	@scripts/install-deps.sh

# Python venv for the model pipeline; it also ships the libonnxruntime.so the aggregator loads.
pydeps:
	@scripts/install-python-deps.sh

build: deps
	$(CARGO) build --workspace --bins

release: deps
	$(CARGO) build --release --workspace --bins

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

PY = $${AUGUR_VENV:-$(HOME)/.cache/augur/venv}/bin/python

# Whole suite: style, the model pipeline's Python unit tests, then unit, component and
# end-to-end tests (real binaries, real cgroups, real ONNX Runtime).
test: lint build pydeps
	@for d in models/eval models/lab models/train models/forecast; do \
	  [ -d $$d ] || continue; echo "python unit tests: $$d"; \
	  "$(PY)" -m unittest discover -s $$d -t $$d -q || exit 1; \
	done
	$(CARGO) nextest run --workspace --no-fail-fast

demo: build
	@scripts/demo.sh "$(BIN)"

clean-demo:
	@scripts/demo.sh --cleanup-only

bench: bench-ingest bench-storage bench-seal bench-agent bench-predict bench-react

bench-ingest: deps
	$(CARGO) build --release -p augur-aggregator -p augur-bench --bins
	$(RBIN)/augur-bench ingest --bin-dir $(RBIN)

bench-storage: deps
	$(CARGO) build --release -p augur-bench --bins
	$(RBIN)/augur-bench storage --recording bench/data/agent-recording-30m.augrec.gz

# Steady-state sealing (maintenance) throughput of the store, in points per second.
bench-seal: deps
	$(CARGO) build --release -p augur-bench --bins
	$(RBIN)/augur-bench seal

# Feature updates and failure-probability inference for 10,000 containers per tick, with
# the shipped models (PREDICT_MODELS to try another manifest).
PREDICT_MODELS ?= models/manifest.toml
bench-predict: deps pydeps
	$(CARGO) build --release -p augur-bench --bins
	$(RBIN)/augur-bench predict --models $(PREDICT_MODELS)

bench-agent: deps
	$(CARGO) build --release -p augur-aggregator -p augur-agent -p augur-bench --bins
	$(RBIN)/augur-bench agent --bin-dir $(RBIN)

# Closed-loop reaction time on loopback: from the sample that takes a workload over its
# policy's threshold to the agent receiving the resize command (real aggregator and gRPC,
# the shipped models; REACT_MODELS to try another manifest). Target p99 <= 50 ms.
REACT_MODELS ?= models/manifest.toml
bench-react: deps pydeps
	$(CARGO) build --release -p augur-aggregator -p augur-bench --bins
	$(RBIN)/augur-bench react --bin-dir $(RBIN) --models $(REACT_MODELS)

# Anomaly-detection evaluation on SMD and NAB (../shared/EVALUATION.md section 2): one JSON
# object per line on stdout. Data from $AUGUR_DATA_DIR or ../shared/data; see models/eval/README.md.
.PHONY: eval
eval:
	@scripts/install-python-deps.sh
	@"$${AUGUR_VENV:-$(HOME)/.cache/augur/venv}/bin/python" models/eval/run_eval.py

# Scenario lab (models/lab/README.md): re-records a labelled dataset of real workloads in
# real cgroups under the real agent and aggregator into models/lab/data/. Needs root;
# takes about 50 minutes; not part of `make test`. Extra flags: make lab LAB_ARGS="--runs 30 --scale 0.5".
.PHONY: lab
LAB_PYTHON ?= python3
LAB_ARGS ?=
lab: deps
	$(CARGO) build --release -p augur-aggregator -p augur-agent -p augur-bench -p augurctl --bins
	$(LAB_PYTHON) models/lab/run.py --bin-dir $(RBIN) --dataset-dir models/lab/data $(LAB_ARGS)

# Soak (models/lab/README.md): 64 light normal and must-not-alarm workloads at once for 33 min
# (35 workload-hours) under the real agent and aggregator: false alarms per workload-day.
.PHONY: lab-soak
lab-soak: deps
	$(CARGO) build --release -p augur-aggregator -p augur-agent -p augur-bench -p augurctl --bins
	$(LAB_PYTHON) models/lab/run.py --bin-dir $(RBIN) --dataset-dir models/lab/data --soak 33m $(LAB_ARGS)

# Container memory-exhaustion models (models/train/train.py): features from the aggregator's
# own feature engine over the lab datasets in models/lab/data, one LightGBM per horizon
# (30 s, 2 min, 10 min), Platt-calibrated on validation runs, exported to models/*.onnx with
# models/manifest.toml and model cards in models/cards/; then the ONNX quantile forecaster
# (models/forecast/train.py) on the same recordings. Fixed seeds; about a minute.
.PHONY: models
models: deps pydeps
	$(CARGO) build --release -p augur-aggregator --bins
	@"$${AUGUR_VENV:-$(HOME)/.cache/augur/venv}/bin/python" models/train/train.py --aggregator $(RBIN)/augur-aggregator
	@"$${AUGUR_VENV:-$(HOME)/.cache/augur/venv}/bin/python" models/forecast/train.py
