#!/usr/bin/env python3
"""`make eval`: every detector on SMD and NAB, one JSON object per line on stdout.

Usage: run_eval.py [--evals smd,nab,lab] [--per-host] [--variants] [--export-onnx DIR]
Data: $AUGUR_DATA_DIR or <repo>/../shared/data (each evaluation skips with a note if absent).
"""

from __future__ import annotations

import argparse
import sys
import time

from augur_eval import harness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", default="smd,nab,lab", help="comma-separated: " + ",".join(harness.EVALS))
    parser.add_argument("--per-host", action="store_true", help="also print one line per detector and host (SMD machine, NAB series)")
    parser.add_argument("--variants", action="store_true", help="also run the SMD variants tried while designing the shipped detector")
    parser.add_argument("--export-onnx", metavar="DIR", help="also export the shipped detector fitted per SMD machine as ONNX into DIR")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.evals.split(",") if n.strip()]
    unknown = [n for n in names if n not in harness.EVALS]
    if unknown:
        parser.error(f"unknown evaluation(s): {', '.join(unknown)}")
    started = time.perf_counter()
    for name in names:
        harness.EVALS[name](harness.emit_stdout, per_host=args.per_host, variants=args.variants)
    if args.export_onnx:
        from augur_eval import onnx_export

        onnx_export.export_smd(args.export_onnx)
    harness.log(f"eval: done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
