"""Pushing images: `make ml-push` to a real registry on loopback, ECR resolution, dirty trees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import credentials
from tests.support.paths import REPO
from tests.support.ports import free_port

from .imagekit import BuiltImage, Engine, base_image

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import LocalServe


REGISTRY_BIN = Path("/usr/bin/docker-registry")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1:<free port> with storage in a temp dir."""
    if not REGISTRY_BIN.exists():
        message = "docker-registry is not installed (scripts/ci/setup-registry.sh)"
        if os.environ.get("DSJOB_REQUIRE_ENGINE") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (tmp_path / "registry.log").open("w")
    proc = subprocess.Popen([str(REGISTRY_BIN), "serve", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.mark.container
def test_ml_push_to_a_real_registry_pulls_back_and_runs(
    engine: Engine, prod_image: BuiltImage, registry: str
) -> None:
    """`make ml-push` pushes prod to a loopback registry; the pulled image runs dsjob."""
    # The session's prod image makes ml-push's own build a cache hit.
    assert prod_image.size > 0
    env = {**os.environ, "BASE_IMAGE": base_image()}
    # --force: other work may leave this shared checkout dirty; the refusal has its own test.
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "ml-push",
            f"REGISTRY={registry}",
            "PUSH_FLAGS=--force",
            f"CONTAINER_ENGINE={engine.command}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with urllib.request.urlopen(
        f"http://{registry}/v2/ds-preprocessing/tags/list", timeout=10
    ) as answer:
        tags = json.load(answer)["tags"]
    # Only the immutable <version>-<sha> tag: ECR refuses to overwrite a moving ":prod".
    assert len(tags) == 1, tags
    assert tags[0][0].isdigit(), tags
    assert "prod" not in tags
    remote = f"{registry}/ds-preprocessing:{tags[0]}"
    engine("rmi", remote, check=False)
    engine("pull", *engine.tls_args(), remote, timeout=600)
    try:
        helped = engine("run", "--rm", "--entrypoint", "dsjob", remote, "--help")
        assert "run" in helped.stdout
        health = engine("run", "--rm", "--entrypoint", "dsjob", remote, "health", check=False)
        assert health.returncode == 0, health.stdout + health.stderr
    finally:
        for tag in tags:
            engine("rmi", f"{registry}/ds-preprocessing:{tag}", check=False)


@pytest.mark.unit
def test_push_refuses_a_dirty_tree(tmp_path: Path) -> None:
    """push-ecr.sh refuses uncommitted changes before touching any registry, unless --force."""
    repo = tmp_path / "repo"
    (repo / "scripts" / "lib").mkdir(parents=True)
    for name in ("push-ecr.sh", "lib/common.sh", "lib/container-engine.sh"):  # it and its sources
        shutil.copy2(REPO / "scripts" / name, repo / "scripts" / name)
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    (repo / "scripts" / "new.py").write_text("print('uncommitted')\n")
    script = str(repo / "scripts" / "push-ecr.sh")
    env = {**os.environ, "CONTAINER_ENGINE": "false"}
    refused = subprocess.run(
        [script, "--registry", "127.0.0.1:1", "img:tag"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert refused.returncode == 1
    assert "uncommitted changes" in refused.stderr
    assert "scripts/new.py" in refused.stderr
    forced = subprocess.run(
        [script, "--registry", "127.0.0.1:1", "--dry-run", "--force", "img:tag"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == "127.0.0.1:1/img:tag"


# The emulator is a moto server on loopback: an integration test, no engine needed.
@pytest.mark.integration
def test_push_resolves_ecr_from_the_account_and_region(local_aws: LocalServe) -> None:
    """Without REGISTRY, push-ecr.sh resolves <account>.dkr.ecr.<region> and logs in to it."""
    ecr = credentials.client("ecr", local_aws.endpoint)
    account = credentials.client("sts", local_aws.endpoint).get_caller_identity()["Account"]
    env = {
        **{k: v for k, v in os.environ.items() if k != "REGISTRY"},
        "AWS_ENDPOINT_URL": local_aws.endpoint,
        "AWS_REGION": "us-east-1",
        "CONTAINER_ENGINE": "podman",
    }
    cmd = [str(REPO / "scripts" / "push-ecr.sh"), "--dry-run", "--force", "ds-preprocessing:prod"]
    missing = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert missing.returncode != 0
    assert "does not exist" in missing.stderr
    ecr.create_repository(repositoryName="ds-preprocessing")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    host = f"{account}.dkr.ecr.us-east-1.amazonaws.com"
    assert proc.stdout.strip() == f"{host}/ds-preprocessing:prod"
    assert f"login --username AWS --password-stdin {host}" in proc.stderr
    pushes = [line for line in proc.stderr.splitlines() if " push " in line]
    assert pushes, proc.stderr
    assert pushes[-1].endswith(f" {host}/ds-preprocessing:prod"), pushes
    # zstd layers by default (podman); PUSH_COMPRESSION=gzip turns it back.
    assert "--compression-format zstd" in pushes[-1], pushes
    gzip = subprocess.run(
        cmd, capture_output=True, text=True, env={**env, "PUSH_COMPRESSION": "gzip"}, check=False
    )
    assert gzip.returncode == 0, gzip.stderr
    assert "--compression-format gzip" in gzip.stderr
