"""Cases 3-6: the small job against the embedded AWS, start-up, images, transfers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness.case_bounded import container_out
from bench.harness.measure import (
    DSJOB,
    MIB,
    PY,
    WORK,
    container_engine,
    dataset,
    image_exists,
    image_name,
    image_size,
    measure,
)
from bench.harness.report import Report, span
from tests.support.credentials import FAKE_ENV

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence


# --- case 3 + 6: against the embedded AWS -------------------------------------------------------


@contextlib.contextmanager
def embedded_aws(rows: int) -> Iterator[dict[str, str] | None]:
    """`dsjob local serve` in the background; yields the env pointing at it (None if absent)."""
    proc = subprocess.Popen(
        [DSJOB, "local", "serve", "--rows", str(rows)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **FAKE_ENV},
    )
    env: dict[str, str] = dict(FAKE_ENV)
    try:
        if proc.stdout is None:
            raise RuntimeError("no stdout pipe")
        for line in proc.stdout:
            env.update(re.findall(r"(\w+)=(\S+)", line.removeprefix("export ")))
            if (
                "AWS_ACCESS_KEY_ID" in env
                and "AWS_ENDPOINT_URL" in env
                and line.startswith("export AWS_ACCESS")
            ):
                break
        yield env if "AWS_ENDPOINT_URL" in env else None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def case_small_job(report: Report, runs: int) -> None:
    """`dsjob run` on 1,228 rows against the embedded AWS, as a subprocess."""
    with embedded_aws(1228) as env:
        if env is None:
            report.add(
                "3. Small job end to end (1,228 rows)", "not run: `dsjob local serve` failed"
            )
            return
        samples = [
            measure(
                [DSJOB, "run", "--log-format", "json"], env=env | {"DSJOB_RUN_ID": f"bench-{i}"}
            )
            for i in range(runs)
        ]
    ok = [s for s in samples if s.returncode == 0]
    status = _status(samples[-1].stdout)
    total = measure([DSJOB, "local", "run", "--rows", "1228"], env=FAKE_ENV)
    lines = [
        (
            "`dsjob run` (SSM config, S3 fetch, built-in step, publish, manifest) against "
            "`dsjob local serve`, one process per run; the first run is the coldest."
        ),
        "",
        "| what | runs ok | wall s, median (min-max) | first run s | peak RSS MiB, median (max) |",
        "|---|---|---|---|---|",
        (
            f"| `dsjob run` | {len(ok)}/{len(samples)} "
            f"| {span([s.wall for s in samples], '{:.3f}')} "
            f"| {samples[0].wall:.3f} | {statistics.median([s.rss / MIB for s in samples]):.0f} "
            f"({max(s.rss / MIB for s in samples):.0f}) |"
        ),
        (
            f"| `dsjob local run` (emulator start + seed + run + summary) | "
            f"{int(total.returncode == 0)}/1 | {total.wall:.3f} | | {total.rss / MIB:.0f} |"
        ),
        "",
        f"Last status line: `{status}`",
        "",
        "Targets: under 1 s and under 150 MB peak for the job process.",
    ]
    report.add("3. Small job end to end (1,228 rows)", "\n".join(lines))
    wall = statistics.median([s.wall for s in samples])
    peak = max(s.rss / MIB for s in samples)
    report.target(
        "1,228-row job end to end under 1 s",
        f"{wall:.2f} s median",
        met=wall < 1,
    )
    report.target(
        "1,228-row job under 150 MB peak",
        f"{peak:.0f} MiB",
        met=peak * MIB < 150e6,
    )


def _status(stdout: str) -> str:
    for line in reversed(stdout.strip().splitlines()):
        with contextlib.suppress(ValueError):
            status = json.loads(line)
            if isinstance(status, dict) and "status" in status:
                return json.dumps(status)[:300]
    return "none"


def case_transfers(report: Report, size_mb: int, runs: int) -> None:
    """A large object up and down through the emulator: job transfer settings vs boto3 defaults."""
    with embedded_aws(10) as env:
        if env is None:
            report.add("6. Transfers", "not run: `dsjob local serve` failed")
            return
        code = (
            "import json, sys, time, boto3\n"
            "from boto3.s3.transfer import TransferConfig\n"
            "from dsjob.storage import transfer_config\n"
            "src, which = sys.argv[1], sys.argv[2]\n"
            "cfg = transfer_config() if which == 'job' else TransferConfig()\n"
            "s3 = boto3.client('s3')\n"
            "t = time.perf_counter(); s3.upload_file(src, 'dsjob-input', 'bench/big', Config=cfg)\n"
            "up = time.perf_counter() - t\n"
            "t = time.perf_counter(); s3.download_file('dsjob-input', 'bench/big', src + '.down',"
            " Config=cfg)\n"
            "print(json.dumps({'up': up, 'down': time.perf_counter() - t}))\n"
        )
        blob = WORK / "transfer.bin"
        blob.parent.mkdir(parents=True, exist_ok=True)
        with blob.open("wb") as handle:
            for _ in range(size_mb):
                handle.write(os.urandom(MIB))
        results: dict[str, list[dict[str, float]]] = {"job": [], "default": []}
        for _ in range(runs):
            for which in ("default", "job"):
                sample = measure([PY, "-c", code, str(blob), which], env=env)
                if sample.returncode == 0:
                    results[which].append(json.loads(sample.stdout.strip().splitlines()[-1]))
        blob.unlink(missing_ok=True)
        Path(f"{blob}.down").unlink(missing_ok=True)
    if not results["job"] or not results["default"]:
        report.add("6. Transfers", "not run: the transfer script failed against the emulator")
        return
    rows = []
    for direction in ("up", "down"):
        job = statistics.median(r[direction] for r in results["job"])
        default = statistics.median(r[direction] for r in results["default"])
        rows.append(f"| {direction} | {default / job:.2f} |")
    report.add(
        "6. Transfers",
        f"{size_mb} MB object through the emulator, {runs} runs each. Ratio = boto3-default "
        "time / job-settings time (>1: the job's settings are faster). Only the ratio is "
        "meaningful: the emulator is not S3.\n\n| direction | default / job |\n|---|---|\n"
        + "\n".join(rows),
    )


# --- case 4: start-up --------------------------------------------------------------------------


def case_startup(report: Report, runs: int) -> None:
    """`dsjob --help`, time to the first log line of `dsjob run`, and what gets imported."""
    helps = [measure([DSJOB, "--help"]) for _ in range(runs)]
    src = dataset(1228)
    firsts = []
    for i in range(runs):
        out = WORK / "startup" / str(i)
        shutil.rmtree(out, ignore_errors=True)
        firsts.append(
            measure(
                [
                    DSJOB,
                    "run",
                    "--input",
                    str(src),
                    "--output-dir",
                    str(out),
                    "--log-format",
                    "json",
                ],
                first_line=True,
            )
        )
    heavy = ("pandas", "pyarrow", "polars", "duckdb", "boto3", "botocore", "numpy")
    imported_help = _imports([PY, "-X", "importtime", "-m", "dsjob", "--help"], heavy)
    out = WORK / "startup" / "importtime"
    shutil.rmtree(out, ignore_errors=True)
    imported_run = _imports(
        [
            PY,
            "-X",
            "importtime",
            "-m",
            "dsjob",
            "run",
            "--input",
            str(src),
            "--output-dir",
            str(out),
        ],
        heavy,
    )
    first = [s.first_line_at for s in firsts if s.first_line_at is not None]
    lines = [
        "| what | wall s, median (min-max) | peak RSS MiB |",
        "|---|---|---|",
        (
            f"| `dsjob --help` | {span([s.wall for s in helps], '{:.3f}')} "
            f"| {statistics.median([s.rss / MIB for s in helps]):.0f} |"
        ),
        (
            f"| `dsjob run` (local 1,228-row CSV): first log line | "
            f"{span(first, '{:.3f}') if first else 'no output'} | |"
        ),
        (
            f"| `dsjob run` (local 1,228-row CSV): exit "
            f"| {span([s.wall for s in firsts], '{:.3f}')} "
            f"| {statistics.median([s.rss / MIB for s in firsts]):.0f} |"
        ),
        "",
        f"Heavy modules imported by `dsjob --help`: {', '.join(imported_help) or 'none'}.",
        (
            f"Heavy modules imported by a local built-in `dsjob run`: "
            f"{', '.join(imported_run) or 'none'} "
            f"(pandas/pyarrow {'NOT ' if {'pandas', 'pyarrow'} & set(imported_run) else ''}"
            "avoided)."
        ),
    ]
    report.add("4. Start-up", "\n".join(lines))


def _imports(cmd: Sequence[str], heavy: Sequence[str]) -> list[str]:
    """Which of ``heavy`` a command imports, from ``-X importtime`` on stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    seen = set(re.findall(r"\|\s+([A-Za-z_][\w]*)\s*$", proc.stderr, re.MULTILINE))
    return [name for name in heavy if name in seen]


# --- case 5: images ----------------------------------------------------------------------------


def case_images(report: Report, runs: int) -> None:
    """Image sizes and prod container start to first job log line."""
    engine = container_engine()
    name = image_name()
    if engine is None:
        report.add("5. Images", "not run: no engine/image (no working container engine)")
        return
    lines = ["| image | size MB |", "|---|---|"]
    for tag in ("prod", "dev"):
        ref = f"{name}:{tag}"
        size = f"{image_size(engine, ref) / 1e6:,.0f}" if image_exists(engine, ref) else "missing"
        lines.append(f"| {ref} | {size} |")
        if tag == "prod" and size != "missing":
            mb = image_size(engine, ref) / 1e6
            report.target("prod image under 500 MB", f"{mb:,.0f} MB", met=mb < 500)
    prod = f"{name}:prod"
    if image_exists(engine, prod):
        src = dataset(1228)
        starts = []
        for _ in range(runs):
            out = container_out()
            starts.append(
                measure(
                    [
                        engine,
                        "run",
                        "--rm",
                        "-v",
                        f"{src.parent}:/data:ro",
                        "-v",
                        f"{out}:/out",
                        prod,
                        "--input",
                        f"/data/{src.name}",
                        "--output-dir",
                        "/out/x",
                        "--log-format",
                        "json",
                    ],
                    first_line=True,
                )
            )
        first = [s.first_line_at for s in starts if s.first_line_at is not None]
        lines += [
            "",
            "| prod container, 1,228-row local job | s, median (min-max) |",
            "|---|---|",
            (
                f"| `{engine} run` to first job log line "
                f"| {span(first, '{:.2f}') if first else 'none'} |"
            ),
            f"| `{engine} run` to exit | {span([s.wall for s in starts])} |",
            f"| exit codes | {', '.join(str(s.returncode) for s in starts)} |",
        ]
    lines += [
        "",
        (
            "From-scratch builds are not measured by this harness: one on a shared machine "
            "would disturb every other measurement; the images scripts (`make ml-build-prod`) "
            "report their own timings. Rebuilds after a source change: case 8."
        ),
        "Target: prod image under 500 MB.",
    ]
    report.add("5. Images", "\n".join(lines))
