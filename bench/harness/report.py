"""The report: targets met or missed, one section per case, written as bench/results.md."""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass
class Report:
    """Markdown sections in the order they are produced."""

    quick: bool
    sections: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)

    def target(self, name: str, measured: str, *, met: bool) -> None:
        """Record one target with what was measured and whether it was met."""
        self.targets.append(f"| {name} | {measured} | {'met' if met else '**missed**'} |")

    def add(self, title: str, body: str) -> None:
        """Append one case's section."""
        self.sections.append(f"## {title}\n\n{body.strip()}\n")
        print(f"--- {title} done", file=sys.stderr, flush=True)


def span(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """'median (min-max)' of several runs, or the single value."""
    med = fmt.format(statistics.median(values))
    if len(values) == 1:
        return med
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def render(report: Report, header: str, seconds: float) -> str:
    """The whole results.md text."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    mode = "quick (`BENCH_QUICK=1`)" if report.quick else "full"
    return (
        "# Benchmark results\n\n"
        f"Written by `make bench` ({mode}) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" in {seconds:.0f} s. Regenerate with `make bench` "
        "(`BENCH_QUICK=1` for the few-minute version).\n\n"
        f"## Machine\n\n{header}| load average at end | {load} |\n\n"
        "This machine is shared: when the load average is above the core count, other "
        "work steals CPU and wall times (and MB/s) come out worse than on an idle box. "
        "The CPU-seconds columns are the load-independent comparison.\n\n"
        "## Targets\n\n| target | measured | verdict |\n|---|---|---|\n"
        + "\n".join(report.targets)
        + "\n\n"
        + "\n".join(report.sections)
    )
