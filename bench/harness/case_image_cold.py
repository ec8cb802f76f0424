"""Case 8: the dev rebuild after a one-line src/ change, and the prod image's pull + start.

- Rebuild: the build script runs from a copy of the build context (outside git, with the
  checkout's commit as VCS_REF). A first build finds (or builds) the tagged dependency
  image and the copy's final stage (not reported), then the same build with nothing
  changed (the floor), then rebuilds each after appending a unique comment to
  src/dsjob/__init__.py. Both targets, alternating, so they share the machine's load.
- Cold start: scripts/image_start.py pushes the prod image to a registry on loopback
  (the stand-in for ECR), pulls it into an empty image store and runs it to its first
  line of output: Fargate pulls the whole image on every start, so pull + start is the
  cold start proxy. gzip and zstd layers.

Runs only when a container engine answers and IMAGE_NAME:dev and :prod exist; the images
it builds are removed at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness.measure import PY, ROOT, container_engine, image_exists, image_name
from bench.harness.report import Report, span

TARGET_S = 10.0
CONTEXT = ("pyproject.toml", "README.md", ".dockerignore", "src", "docker", "scripts", "config")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _base_of(engine: str, ref: str) -> str:
    """BASE_IMAGE from the environment, else the base `ref` was built on (its history)."""
    if os.environ.get("BASE_IMAGE"):
        return os.environ["BASE_IMAGE"]
    history = subprocess.run(
        [engine, "image", "inspect", "--format", "{{range .History}}{{.CreatedBy}}\n{{end}}", ref],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = re.search(r"\bBASE_IMAGE=(\S+)", history)
    return found.group(1) if found else ""


def _context_copy(root: Path) -> Path:
    ctx = root / "ctx"
    ctx.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in CONTEXT:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, ctx / name, ignore=ignore)
        else:
            shutil.copy2(src, ctx / name)
    for lock in ROOT.glob("requirements*.lock"):
        shutil.copy2(lock, ctx / lock.name)
    return ctx


def _build(ctx: Path, target: str, env: dict[str, str]) -> tuple[float, str]:
    """Seconds the build script took, and the versioned reference it printed."""
    started = time.perf_counter()
    proc = subprocess.run(
        [str(ctx / "scripts" / "build-ml-container.sh"), "--target", target],
        cwd=ctx, env=env, capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        msg = f"build --target {target} failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
        raise RuntimeError(msg)
    return seconds, proc.stdout.strip().splitlines()[-1]


def _rebuilds(engine: str, name: str, runs: int) -> dict[str, dict[str, list[float]]]:
    """Per target: the no-change build and the rebuilds after a one-line change (seconds)."""
    vcs_ref = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    env = {
        **os.environ,
        "CONTAINER_ENGINE": engine,
        "BASE_IMAGE": _base_of(engine, f"{name}:dev"),
        "IMAGE_NAME": f"{name}-bench-rebuild",
        "VCS_REF": vcs_ref or "unknown",
    }
    targets = ("dev", "production")
    times: dict[str, dict[str, list[float]]] = {t: {"same": [], "changed": []} for t in targets}
    refs: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="dsjob-bench-rebuild-") as tmp:
        ctx = _context_copy(Path(tmp))
        init = ctx / "src" / "dsjob" / "__init__.py"
        original = init.read_text(encoding="utf-8")
        try:
            for target in targets:
                refs.add(_build(ctx, target, env)[1])  # settles the chain; not reported
                seconds, ref = _build(ctx, target, env)
                times[target]["same"].append(seconds)
                refs.add(ref)
            for _ in range(runs):
                for target in targets:
                    init.write_text(original + f"\n# bench rebuild {uuid.uuid4().hex}\n")
                    seconds, ref = _build(ctx, target, env)
                    times[target]["changed"].append(seconds)
                    refs.add(ref)
        finally:
            moving = [f"{env['IMAGE_NAME']}:{tag}" for tag in ("dev", "prod")]
            rmi = [engine, "rmi", "--force", *refs, *moving]
            subprocess.run(rmi, capture_output=True, check=False)
    return times


def case_image_cold(report: Report, runs: int) -> None:
    """Dev and prod rebuild after a one-line change; prod pull + start to first line."""
    title = "8. Image rebuild and cold start"
    engine = container_engine()
    name = image_name()
    missing = [t for t in ("dev", "prod") if engine and not image_exists(engine, f"{name}:{t}")]
    if engine is None or missing:
        why = "no working container engine" if engine is None else f"missing {missing}"
        report.add(title, f"not run: {why} (`make ml-build ml-build-prod`)")
        return
    load_before = _load()
    times = _rebuilds(engine, name, runs)
    load_mid = _load()
    script = [PY, str(ROOT / "scripts" / "image_start.py"), f"{name}:prod", "--engine", engine]
    cold: dict[str, dict[str, Any]] = json.loads(
        subprocess.run(
            [*script, "--rounds", str(runs), "--json"],
            capture_output=True, text=True, check=True, timeout=3600,
        ).stdout
    )  # fmt: skip
    dev = times["dev"]["changed"]
    lines = [
        (
            f"Load average: {load_before} before the builds, {load_mid} after them, "
            f"{_load()} after the pulls."
        ),
        "",
        "| build script from a context copy | dev s, median (min-max) | prod s, median (min-max) |",
        "|---|---|---|",
        (
            f"| same build, nothing changed | {span(times['dev']['same'])} "
            f"| {span(times['production']['same'])} |"
        ),
        (
            f"| rebuild after a one-line src/ change | {span(dev)} "
            f"| {span(times['production']['changed'])} |"
        ),
        "",
        (
            f"| prod image `{name}:prod` via a loopback registry | in registry MB | push s "
            "| pull s | `run` to first line s | pull + start s |"
        ),
        "|---|---|---|---|---|---|",
        *(
            f"| {kind} layers | {r['registry_mb']} | {r['push_s']} | {r['pull_s']} "
            f"| {r['start_s']} | {r['pull_start_s']} |"
            for kind, r in cold.items()
        ),
        "",
        (
            "Builds: wall time of scripts/build-ml-container.sh (engine included). Pull: "
            "into an empty image store, as on Fargate; start: `run` to the container's "
            "first line of output. Medians of the rounds."
        ),
    ]
    median_dev = statistics.median(dev)
    report.target(
        f"dev rebuild after a one-line src change under {TARGET_S:.0f} s",
        f"{median_dev:.1f} s (load {load_mid.split()[0]})",
        met=median_dev < TARGET_S,
    )
    report.add(title, "\n".join(lines))
