"""Cases 1-2: engines and dedup designs side by side, and the prod image under 512 MiB."""

from __future__ import annotations

import json
import os
import shutil
import statistics
from typing import TYPE_CHECKING

from bench.harness.measure import (
    MIB,
    PY,
    ROOT,
    WORK,
    dataset,
    measure,
)
from bench.harness.report import Report, span

ENGINES = (
    "builtin",
    "builtin-512m",
    "distinct-512m",
    "fp-stage-512m",
    "fp-reparse-512m",
    "fp-pqstage-512m",
    "parse-only-512m",
    "distinct-zstd1-512m",
    "parse-native-512m",
    "group-count-512m",
    "distinct-and-count-512m",
    "pandas",
    "polars",
)
#: Engines whose output types are DuckDB's, so their row-hash digests must agree.
EXACT = (
    "builtin",
    "builtin-512m",
    "distinct-512m",
    "fp-stage-512m",
    "fp-reparse-512m",
    "fp-pqstage-512m",
    "distinct-zstd1-512m",
    "group-count-512m",
    "distinct-and-count-512m",
)

#: The engines the targets compare; they get KEY_ROUNDS at the largest size even in quick mode.
KEY_ENGINES = ("builtin-512m", "polars", "parse-only-512m")
KEY_ROUNDS = 3

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from bench.harness.measure import Sample


def _interleaved(
    src: Path, rows: int, runs_of: dict[str, int]
) -> dict[str, list[tuple[Sample, float]]]:
    """Each engine's samples with the 1-minute load average at its start, rounds interleaved.

    An engine that fails is not run again.
    """
    measured: dict[str, list[tuple[Sample, float]]] = {e: [] for e in runs_of}
    for i in range(max(runs_of.values())):
        for engine, runs in runs_of.items():
            done = measured[engine]
            if i >= runs or (done and done[-1][0].returncode != 0):
                continue
            out = WORK / "engines" / f"{engine}-{rows}-{i}"
            shutil.rmtree(out, ignore_errors=True)
            load = os.getloadavg()[0]
            sample = measure([PY, str(ROOT / "bench" / "engines.py"), engine, str(src), str(out)])
            shutil.rmtree(out, ignore_errors=True)
            done.append((sample, load))
    return measured


# --- case 1: engines side by side ------------------------------------------------------------


def case_engines(report: Report, sizes: Sequence[int], runs: int) -> None:
    """Built-in vs pandas vs polars on the same files."""
    lines = [
        (
            "Each engine runs in a fresh process; wall = spawn to exit (imports included), "
            "MB/s = input bytes / median wall, RSS = the child's peak. `builtin` uses the "
            "step's default memory limit (derived from this machine's RAM); `builtin-512m` "
            "uses the 312 MB limit the step derives inside a 512 MiB container. Rounds "
            "interleave the engines (round 1 of every engine, then round 2, ...), so a change "
            "of load on a shared machine falls on all of them; at the largest size "
            f"{', '.join(KEY_ENGINES)} run at least {KEY_ROUNDS} times."
        ),
        "",
    ]
    for rows in sizes:
        src = dataset(rows)
        size_mb = src.stat().st_size / 1e6
        lines += [
            f"### {rows:,} rows ({size_mb:,.1f} MB CSV)",
            "",
            (
                "| engine | wall s, median (min-max) | MB/s | peak RSS MiB, median (max) "
                "| CPU s | rows out | runs | load avg (1 min) at start |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        medians: dict[str, float] = {}
        rss_max: dict[str, float] = {}
        cpu: dict[str, float] = {}
        outs: dict[str, set[int]] = {}
        digests: dict[str, set[str]] = {}
        # At the largest size the engines the targets compare get at least KEY_ROUNDS.
        extra = KEY_ROUNDS if rows == sizes[-1] else runs
        runs_of = {e: max(runs, extra) if e in KEY_ENGINES else runs for e in ENGINES}
        measured = _interleaved(src, rows, runs_of)
        for engine in ENGINES:
            samples = [sample for sample, _ in measured[engine]]
            loads = [load for _, load in measured[engine]]
            ok = [s for s in samples if s.returncode == 0]
            if not ok:
                lines.append(f"| {engine} | failed (exit {samples[-1].returncode}) | | | | | | |")
                continue
            walls = [s.wall for s in ok]
            medians[engine] = statistics.median(walls)
            results = [json.loads(s.stdout.strip().splitlines()[-1]) for s in ok]
            outs[engine] = {r["rows_out"] for r in results}
            digests[engine] = {r["digest"] for r in results}
            rss = [s.rss / MIB for s in ok]
            rss_max[engine] = max(rss)
            cpu[engine] = statistics.median([s.cpu for s in ok])
            lines.append(
                f"| {engine} | {span(walls)} | {size_mb / medians[engine]:,.0f} "
                f"| {statistics.median(rss):,.0f} ({max(rss):,.0f}) "
                f"| {statistics.median([s.cpu for s in ok]):.1f} "
                f"| {', '.join(f'{n:,}' for n in sorted(outs[engine]))} "
                f"| {len(ok)} | {span(loads, '{:.1f}')} |"
            )
        counts = {n for e, v in outs.items() for n in v if not e.startswith("parse-")}
        exact = {d for e, v in digests.items() for d in v if e in EXACT}
        same = "identical multisets of rows (same row-hash digest)"
        lines += [
            "",
            (
                f"Output rows {'match' if len(counts) == 1 else 'DIFFER'} across the "
                f"deduplicating engines; the DuckDB-typed outputs ({', '.join(EXACT)}) are "
                f"{same if len(exact) == 1 else 'NOT identical'}."
            ),
        ]
        if "parse-only-512m" in medians and "builtin-512m" in medians:
            lines.append(
                f"Parse-only ceiling (clean + write, no dedup, 312 MB): "
                f"{medians['parse-only-512m']:.2f} s, {cpu['parse-only-512m']:.1f} CPU s; the "
                f"bounded step takes {medians['builtin-512m'] / medians['parse-only-512m']:.2f}x "
                f"that (CPU seconds: {cpu['builtin-512m'] / cpu['parse-only-512m']:.2f}x)."
            )
        if "builtin" in medians and "pandas" in medians:
            ratio = medians["builtin"] / medians["pandas"]
            lines.append(
                f"Built-in / pandas wall-time ratio: **{ratio:.2f}** "
                f"(built-in {1 / ratio:.1f}x faster; bounded variant "
                f"{medians.get('builtin-512m', float('nan')) / medians['pandas']:.2f})."
            )
        if "builtin-512m" in medians and "polars" in medians:
            lines.append(
                f"Bounded built-in / polars wall-time ratio: "
                f"{medians['builtin-512m'] / medians['polars']:.2f} (CPU seconds: "
                f"{cpu['builtin-512m'] / cpu['polars']:.2f})."
            )
        lines.append("")
        if rows == sizes[-1]:
            _engine_targets(
                report, rows=rows, size_mb=size_mb, medians=medians, rss_max=rss_max, cpu=cpu
            )
    report.add("1. Engines side by side", "\n".join(lines))


def _engine_targets(
    report: Report,
    *,
    rows: int,
    size_mb: float,
    medians: dict[str, float],
    rss_max: dict[str, float],
    cpu: dict[str, float],
) -> None:
    """The engine targets, judged on the largest size this run had."""
    need = {"builtin", "builtin-512m", "pandas", "polars"}
    if not need <= medians.keys():
        report.targets.append(f"| engine targets | an engine failed at {rows:,} rows | - |")
        return
    at = f"at {rows:,} rows"
    speedup = medians["pandas"] / medians["builtin-512m"]
    report.target(
        f"built-in >= 3x faster than pandas {at}",
        f"{speedup:.1f}x bounded, {medians['pandas'] / medians['builtin']:.1f}x default "
        f"(CPU seconds: {cpu['pandas'] / cpu['builtin-512m']:.1f}x)",
        met=speedup >= 3,
    )
    report.target(
        f"built-in (bounded) peak under 512 MiB {at}",
        f"{rss_max['builtin-512m']:,.0f} MiB (pandas {rss_max['pandas']:,.0f}, "
        f"polars {rss_max['polars']:,.0f})",
        met=rss_max["builtin-512m"] < 512,
    )
    cores = len(os.sched_getaffinity(0))
    mbps = size_mb / medians["builtin-512m"]
    report.target(
        f"built-in (bounded) >= 100 MB/s {at}",
        f"{mbps:,.0f} MB/s wall; {size_mb / (cpu['builtin-512m'] / cores):,.0f} MB/s if its "
        f"CPU seconds were spread over {cores} free cores (upper bound)",
        met=mbps >= 100,
    )
    report.target(
        f"bounded built-in at least polars' speed {at}",
        f"{medians['polars'] / medians['builtin-512m']:.2f}x polars' speed "
        f"(CPU seconds: {cpu['polars'] / cpu['builtin-512m']:.2f}x)",
        met=medians["builtin-512m"] < medians["polars"] and rss_max["builtin-512m"] < 512,
    )
