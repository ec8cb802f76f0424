# ruff: noqa: S101
"""Push and pull an image through a local registry (gzip vs zstd layers), then start it (podman).

    python3 scripts/image_start.py IMAGE [--engine podman] [--rounds 3] [--json]

Starts Debian's docker-registry on a free loopback port with storage in a temp dir (the
stand-in for ECR), then for each layer compression pushes IMAGE, removes the local copy
of the pushed tag, pulls it back, and runs it until its first line of output: Fargate
pulls the whole image on every start, so pull + start to first log line is the cold
start proxy. Prints a Markdown table (or --json) with the median of the rounds; the
benchmark (bench/) calls `measure()`.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REGISTRY = Path("/usr/bin/docker-registry")
COMPRESSIONS = ("gzip", "zstd")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _registry(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        [str(REGISTRY), "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.2)


def _timed(cmd: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.monotonic() - start


def _first_line(engine: list[str], ref: str) -> float:
    """Seconds from `run` to the container's first line of output (stdout or stderr)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [*engine, "run", "--rm", "-e", "DSJOB_LOG_FORMAT=json", ref],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    for raw in proc.stdout:
        # The engine's own warnings (podman without systemd) are not the job's output.
        if not raw.startswith((b"time=", b"WARN")):
            break
    elapsed = time.monotonic() - start
    proc.kill()
    proc.wait()
    return elapsed


def _blob_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "data").rglob("data") if p.is_file())


def measure(image: str, engine: str = "podman", rounds: int = 3) -> dict[str, dict[str, Any]]:
    """Per compression: registry bytes and median push, pull, start and pull+start seconds."""
    results: dict[str, dict[str, Any]] = {}
    tls = ["--tls-verify=false"] if Path(engine).name == "podman" else []
    # podman before 4.6 has no --force-compression; it compresses local layers anyway.
    helped = subprocess.run([engine, "push", "--help"], capture_output=True, text=True, check=False)
    force = ["--force-compression"] if "--force-compression" in helped.stdout else []
    for compression in COMPRESSIONS:
        with tempfile.TemporaryDirectory(prefix="dsjob-image-start-") as tmp:
            root = Path(tmp)
            registry, address = _registry(root)
            try:
                ref = f"{address}/dsjob-start:{compression}"
                pushes, pulls, starts = [], [], []
                for _ in range(rounds):
                    pushes.append(_timed([
                        engine, "push", *tls, "--compression-format", compression,
                        *force, image, ref,
                    ]))  # fmt: skip
                    # A fresh image store per round: the engine would otherwise reuse the
                    # layers it already holds and the pull would move no data.
                    store = Path(tempfile.mkdtemp(prefix="store-", dir=root))
                    cold = [engine, "--root", str(store / "root"), "--runroot", str(store / "run")]
                    pulls.append(_timed([*cold, "pull", *tls, "--quiet", ref]))
                    starts.append(_first_line(cold, ref))
                    subprocess.run([*cold, "rmi", "--force", ref], capture_output=True, check=False)
                results[compression] = {
                    "registry_mb": round(_blob_bytes(root) / 1e6, 1),
                    "push_s": round(statistics.median(pushes), 2),
                    "pull_s": round(statistics.median(pulls), 2),
                    "start_s": round(statistics.median(starts), 2),
                    "pull_start_s": round(
                        statistics.median(p + s for p, s in zip(pulls, starts, strict=True)), 2
                    ),
                }
            finally:
                registry.terminate()
                registry.wait(10)
    return results


def main() -> None:
    """Command line: measure one image and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--engine", default="podman")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = measure(args.image, args.engine, args.rounds)
    if args.json:
        print(json.dumps(results))
        return
    print("| layers | in registry MB | push s | pull s | start to first line s | pull + start s |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['registry_mb']} | {r['push_s']} | {r['pull_s']} | {r['start_s']} "
            f"| {r['pull_start_s']} |"
        )


if __name__ == "__main__":
    main()
