"""The build script's commands (--dry-run); config/versions.conf as the single version source."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.versions import VERSIONS

# The script only prints the engine commands: no engine needed.
pytestmark = pytest.mark.unit

SCRIPT = REPO / "scripts" / "build-ml-container.sh"


def dry_run(*args: str, **env: str) -> str:
    """The engine commands the build script would run."""
    proc = subprocess.run(
        [str(SCRIPT), "--dry-run", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # printf %q escapes commas; compare the words as the shell will see them.
    return proc.stdout.replace("\\", "")


def test_dry_run_passes_versions_locks_and_ca_secret() -> None:
    """--dry-run prints a podman build with versions.conf's pins, the lock and the CA secret."""
    out = dry_run("--target", "production", "--with-ml", CONTAINER_ENGINE="podman")
    assert out.startswith("podman build --format docker --file docker/Dockerfile --target prod")
    assert f"UV_VERSION={VERSIONS['UV_VERSION']}" in out
    assert f"DUCKDB_CLI_VERSION={VERSIONS['DUCKDB_CLI_VERSION']}" in out
    assert "PROD_LOCK=requirements-ml.lock" in out
    assert re.search(r"--tag ds-preprocessing:[^ ]+-ml ", out)
    assert "--tag ds-preprocessing:prod-ml" in out
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        assert "--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt" in out
    slim = dry_run(
        "--target", "dev", "--slim", "--base-image", "example/base:1", CONTAINER_ENGINE="podman"
    )
    assert "DEV_LOCK=requirements-dev-slim.lock" in slim
    assert "BASE_IMAGE=example/base:1" in slim
    assert "--tag ds-preprocessing:dev-slim" in slim


def test_dry_run_multi_platform_uses_buildx_or_manifests() -> None:
    """Several --platform values become a podman manifest, or a pushing buildx build with docker."""
    podman = dry_run(
        "--target", "production", "--platform", "linux/amd64,linux/arm64", CONTAINER_ENGINE="podman"
    )
    assert "--platform linux/amd64,linux/arm64" in podman
    assert "--manifest ds-preprocessing:" in podman
    docker = dry_run(
        "--target",
        "production",
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64",
        "--push",
        CONTAINER_ENGINE="docker",
        REGISTRY="registry.example:5000",
    )
    assert docker.startswith("docker buildx build")
    assert "--push" in docker
    # buildx pushes while building: only the immutable versioned tag goes to the registry.
    assert "--tag registry.example:5000/ds-preprocessing:0." in docker
    assert "registry.example:5000/ds-preprocessing:prod" not in docker


def test_versions_conf_is_the_single_source() -> None:
    """No tracked build/CI/devcontainer file hard-codes a tool version that versions.conf owns."""
    owned = {
        k: VERSIONS[k]
        for k in (
            "UV_VERSION",
            "DUCKDB_CLI_VERSION",
            "DEVCONTAINER_CLI_VERSION",
            "AWS_CDK_CLI_VERSION",
        )
        if VERSIONS.get(k)
    }
    # `-c safe.directory=*`: the devcontainer runs this suite on a workspace another uid owns.
    listed = subprocess.run(
        ["git", "-c", "safe.directory=*", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    files = (
        listed.stdout.split()
        if listed.returncode == 0
        else [  # no usable git dir (a worktree mounted without it): the tracked folders' files
            p.relative_to(REPO).as_posix()
            for p in REPO.rglob("*")
            if p.is_file() and not {".git", ".venv", ".cache", "__pycache__"} & set(p.parts)
        ]
    )
    checked = [
        f
        for f in files
        if not f.endswith((".lock", ".md", ".ipynb", ".png", ".svg", ".json.lock"))
        # devcontainer.json cannot read versions.conf; its build args are held equal to it
        # by tests/container/test_devcontainer.py::test_build_args_match_versions_conf.
        and f not in {"config/versions.conf", ".devcontainer/devcontainer.json"}
        and f.startswith(
            ("docker/", "scripts/", "make/", ".devcontainer/", ".github/", ".ci/", "Makefile")
        )
    ]
    offenders = []
    for name in checked:
        text = (REPO / name).read_text(encoding="utf-8", errors="replace")
        offenders += [
            f"{name}: {key}={value}"
            for key, value in owned.items()
            if re.search(rf"(?<![\d.]){re.escape(value)}(?![\d.])", text)
        ]
    assert offenders == []
    # The Dockerfile's default base is the one versions.conf names, so a bare build works.
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    match = re.search(r"^ARG BASE_IMAGE=(\S+)", dockerfile, re.MULTILINE)
    assert match
    assert match.group(1) == VERSIONS["BASE_IMAGE"]


def test_pin_base_says_plainly_when_no_registry_answers() -> None:
    """Without a reachable registry, pin-base exits 1, names the image and keeps the pin."""
    conf = (REPO / "config" / "versions.conf").read_text()
    proc = subprocess.run(
        [str(REPO / "scripts" / "pin-base.sh")],
        capture_output=True,
        text=True,
        # `false` as the engine: every pull fails at once, as with no registry.
        env={**os.environ, "CONTAINER_ENGINE": "false", "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"no registry answers for {VERSIONS['BASE_IMAGE'].split('@')[0]}" in proc.stderr
    assert (REPO / "config" / "versions.conf").read_text() == conf
