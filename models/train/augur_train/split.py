"""Which runs train, calibrate and test the models.

Always by run, never by time step: every row of a run lands in the run's split.

1. Held-out families (a second test set, never trained or calibrated on): scenario
   families and parameter ranges the models never see:
   - every ``leak.accel`` run (an accelerating leak: a growth shape unseen in training),
   - every leak run with a 512 MiB memory limit (a leak limit unseen in training),
   - every ``normal.periodic`` run (a normal workload unseen in training).
2. The other runs, per variant (so every split has every seen variant), are shuffled
   with a fixed seed and cut into train / validation / test (50 / 25 / 25 %).

Soak runs (``models/lab/run.py --soak``: long normal and must-not-alarm workloads,
``params.soak_s`` set) have a split of their own, ``soak``, which measures false alarms
per workload-day and is never trained or calibrated on: per soak session and variant,
75 % of the runs (by the same seeded hash) go to ``soak`` (a later session never moves an
earlier one's runs); the rest are cut half train, half validation,
so long normal runs also shape the models and their operating threshold. Soak runs of a
held-out variant all go to ``soak`` (never trained on). This rule was fixed before the
first soak recording was scored.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict

SPLITS = ("train", "val", "test", "heldout", "soak")
HELDOUT_VARIANTS = ("leak.accel", "normal.periodic")
HELDOUT_LEAK_LIMITS_MIB = (512,)
FRACTIONS = {"train": 0.5, "val": 0.25, "test": 0.25}
SEED = 20261123
SOAK_TEST_SHARE = 0.75


def is_soak(run) -> bool:
    """A run of a soak session (long normal workload, ``params.soak_s`` set)."""
    return (run.params or {}).get("soak_s") is not None


def heldout_reason(run) -> str | None:
    """Why ``run`` belongs to the held-out families, or None."""
    if run.variant in HELDOUT_VARIANTS:
        return f"variant {run.variant}"
    limit = (run.limits or {}).get("memory_bytes")
    if run.family == "leak" and limit and int(limit) >> 20 in HELDOUT_LEAK_LIMITS_MIB:
        return f"leak limit {int(limit) >> 20} MiB"
    return None


def split_counts(n: int, fractions: dict = FRACTIONS) -> tuple[int, int, int]:
    """(train, val, test) sizes of a stratum of ``n`` runs: rounded shares, with train
    keeping at least its share rounded down (and at least one run)."""
    n_val = int(n * fractions["val"] + 0.5)
    n_test = int(n * fractions["test"] + 0.5)
    floor_train = max(1, int(n * fractions["train"])) if n else 0
    while n - n_val - n_test < floor_train and (n_val or n_test):
        if n_test >= n_val and n_test:
            n_test -= 1
        else:
            n_val -= 1
    return n - n_val - n_test, n_val, n_test


def _shuffle_key(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}/{key}".encode()).hexdigest()


def assign_splits(runs, seed: int = SEED, fractions: dict = FRACTIONS) -> dict:
    """run key -> "train" | "val" | "test" | "heldout". Deterministic in (seed, run keys):
    within a variant the runs are ordered by a seeded hash of their key."""
    out = {}
    strata = defaultdict(list)
    soak = defaultdict(list)
    for r in runs:
        if is_soak(r):
            if r.variant in HELDOUT_VARIANTS:
                out[r.key] = "soak"
            else:
                soak[(r.dataset, r.variant)].append(r.key)
        elif heldout_reason(r):
            out[r.key] = "heldout"
        else:
            strata[r.variant].append(r.key)
    for variant in sorted(strata):
        keys = sorted(strata[variant], key=lambda k: _shuffle_key(seed, k))
        n_train, n_val, n_test = split_counts(len(keys), fractions)
        # Alternate which of val/test gets a stratum's first runs so small strata spread.
        rng = random.Random(f"{seed}/{variant}")
        order = ["val", "test"] if rng.random() < 0.5 else ["test", "val"]
        sizes = {"val": n_val, "test": n_test}
        pos = 0
        for name in order:
            for k in keys[pos : pos + sizes[name]]:
                out[k] = name
            pos += sizes[name]
        for k in keys[pos:]:
            out[k] = "train"
    # per session and variant, so that adding a soak session never moves an earlier one's runs
    for stratum in sorted(soak):
        keys = sorted(soak[stratum], key=lambda k: _shuffle_key(seed, k))
        n_test = min(len(keys), int(len(keys) * SOAK_TEST_SHARE + 0.5))
        for i, k in enumerate(keys):
            out[k] = "soak" if i < n_test else ("train" if (i - n_test) % 2 == 0 else "val")
    return out
