"""Run the benchmark cases and write bench/results.md.

    python bench/run.py [--quick] [--output bench/results.md] [--cases 1,2,...]

Every measured program runs as a child process (see harness/measure.py).
Cases that need something this machine lacks (a container engine, an image)
are reported as "not run" with the reason -- never silently dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import case_bounded, case_image_cold, case_lambda, cases, cases_more
from bench.harness.measure import ROOT, machine
from bench.harness.report import Report, render

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run every case and write the report."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer runs (minutes)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.md")
    parser.add_argument("--cases", default="1,2,3,4,5,6,7,8", help="comma-separated case numbers")
    args = parser.parse_args(argv)
    chosen = set(args.cases.split(","))
    quick = args.quick or os.environ.get("BENCH_QUICK") == "1"
    report = Report(quick=quick)
    started = time.perf_counter()
    header = machine()
    sizes = (1228, 100_000, 3_000_000) if quick else (1228, 3_000_000, 10_000_000)
    if "1" in chosen:
        cases.case_engines(report, sizes, runs=1 if quick else 3)
    if "2" in chosen:
        case_bounded.case_memory_bounded(report, sizes[-1], rounds=1 if quick else 2)
    if "3" in chosen:
        cases_more.case_small_job(report, 5)
    if "4" in chosen:
        cases_more.case_startup(report, 5)
    if "5" in chosen:
        cases_more.case_images(report, 3)
    if "6" in chosen:
        cases_more.case_transfers(report, 200, 2 if quick else 3)
    if "7" in chosen:
        case_lambda.case_lambda_start(report, 3 if quick else 5)
    if "8" in chosen:
        case_image_cold.case_image_cold(report, 2 if quick else 3)
    args.output.write_text(render(report, header, time.perf_counter() - started), encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
