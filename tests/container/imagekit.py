"""Helpers for the container tests: the engine CLI, the build script, config files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.versions import VERSIONS, read_conf

BUILD_SCRIPT = REPO / "scripts" / "build-ml-container.sh"

# Clean (--no-cache) builds measured on the 2-core CI machine, podman + overlay, warm uv
# cache, load average 4-6: one after the other (a CI run), and both at once (prod
# finished after 257 s, dev after 410 s: slower than in a row, so the suite builds
# them in a row).
COLD_BUILD_S = {"prod": 109, "dev": 186, "prod+dev in a row": 295, "prod+dev at once": 410}
# One build's timeout, from the slowest single build above (dev's 186 s). A fresh clone
# on a busy 2-core machine (cold uv cache) took over 600 s for it, about 3.2x that
# figure: 10x leaves 3x headroom over the worst seen, so only a hung build reaches it.
BUILD_TIMEOUT_FACTOR = 10
BUILD_TIMEOUT_S = float(BUILD_TIMEOUT_FACTOR * max(COLD_BUILD_S["prod"], COLD_BUILD_S["dev"]))


# IMAGE_NAME from the environment first: on a shared machine each user builds their own.
IMAGE_NAME = os.environ.get("IMAGE_NAME") or VERSIONS.get("IMAGE_NAME", "ds-preprocessing")


def base_image() -> str:
    """The base the images build on: $BASE_IMAGE, CI's bootstrapped base, or the default."""
    return (
        os.environ.get("BASE_IMAGE")
        or read_conf(REPO / ".cache" / "ci.env").get("BASE_IMAGE")
        or VERSIONS["BASE_IMAGE"]
    )


@dataclass(frozen=True)
class Engine:
    """A working container engine CLI (podman or docker)."""

    command: str

    @property
    def name(self) -> str:
        """Podman or docker."""
        return Path(self.command).name

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the engine CLI, capturing text output; raise with the output on failure."""
        proc = subprocess.run(
            [self.command, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
            check=False,
        )
        if check and proc.returncode != 0:
            msg = f"{self.name} {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            raise AssertionError(msg)
        return proc

    def inspect(self, ref: str) -> dict[str, object]:
        """`image inspect` of one image as a dict."""
        data = json.loads(self("image", "inspect", ref).stdout)
        assert isinstance(data, list)
        first = data[0]
        assert isinstance(first, dict)
        return first

    def size(self, ref: str) -> int:
        """Uncompressed image size in bytes, as the engine reports it."""
        return int(self("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())

    def tls_args(self) -> list[str]:
        """Flags for talking to a plain-HTTP registry on loopback (podman needs them)."""
        return ["--tls-verify=false"] if self.name == "podman" else []


def chosen_engine() -> str:
    """The engine scripts/lib/container-engine.sh picks (the one choice every caller shares)."""
    proc = subprocess.run(
        ["bash", "-c", f". {REPO / 'scripts' / 'lib' / 'container-engine.sh'} && container_engine"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return proc.stdout.strip()


def detect_engine() -> tuple[str | None, str]:
    """The chosen engine's path when its `info` answers, else (None, why)."""
    candidate = chosen_engine()
    path = shutil.which(candidate)
    if path is None:
        return None, f"{candidate}: not on PATH"
    try:
        proc = subprocess.run(
            [path, "info"], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"{candidate}: `info` timed out"
    if proc.returncode == 0:
        return path, ""
    return None, f"{candidate}: `info` failed: {proc.stderr.strip()[-300:]}"


@dataclass(frozen=True)
class BuiltImage:
    """An image built by scripts/build-ml-container.sh in this session."""

    ref: str  # versioned: ds-preprocessing:<version>-<sha>[-dev]
    tag: str  # moving: ds-preprocessing:prod / :dev
    log: str  # the engine's build output
    seconds: float
    size: int
    revision: str  # git HEAD when it was built
    clean: bool  # built with --no-cache
    args: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        """The versioned reference (use it with the engine CLI)."""
        return self.ref


def git_head(cwd: Path = REPO) -> str:
    """HEAD's full sha, or "unknown" outside git."""
    proc = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def build_image(
    engine: Engine,
    *args: str,
    context: Path = REPO,
    image_name: str = IMAGE_NAME,
    no_cache: bool = False,
    timeout: float = BUILD_TIMEOUT_S,
    extra_env: dict[str, str] | None = None,
) -> BuiltImage:
    """Run the build script (from `context`, a repo checkout or a copy) and describe the result."""
    env = {
        **os.environ,
        "CONTAINER_ENGINE": engine.command,
        "BASE_IMAGE": base_image(),
        "IMAGE_NAME": image_name,
        **(extra_env or {}),
    }
    cmd = [str(context / "scripts" / "build-ml-container.sh"), *args]
    if no_cache:
        cmd.append("--no-cache")
    revision = git_head(context)
    start = time.monotonic()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False, cwd=context
    )
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        tail = proc.stderr[-6000:]
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}", pytrace=False)
    ref = proc.stdout.strip().splitlines()[-1]
    target = args[args.index("--target") + 1]
    moving = {"dev": "dev", "production": "prod", "lambda": "lambda"}[target]
    if "--slim" in args:
        moving = "dev-slim"
    if "--with-ml" in args:
        moving = "prod-ml"
    built = BuiltImage(
        ref=ref,
        tag=f"{image_name}:{moving}",
        log=proc.stderr,
        seconds=seconds,
        size=engine.size(ref),
        revision=revision,
        clean=no_cache,
        args=tuple(args),
    )
    print(f"\nbuilt {ref} in {seconds:.1f} s, {built.size / 1e6:.0f} MB")
    return built
