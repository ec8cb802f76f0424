"""compose.yaml under podman-compose: the emulator and the prod job on their own network."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.credentials import client
from tests.support.paths import REPO
from tests.support.ports import free_port

from .imagekit import BuiltImage, Engine

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.container, pytest.mark.timeout(600)]  # on top of the builds

UV = REPO / ".cache" / "tools" / "bin" / "uv"


@pytest.fixture(scope="module")
def podman_compose(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """podman-compose from requirements-compose.lock in a throwaway venv."""
    if engine.name != "podman":
        pytest.skip("docker compose is the docker user's path; this test checks podman-compose")
    venv = tmp_path_factory.mktemp("compose") / "venv"
    env = {"UV_NATIVE_TLS": "1", "PATH": os.environ["PATH"]}
    subprocess.run([str(UV), "venv", "--quiet", "--python", "python3", str(venv)], check=True)
    subprocess.run(
        [str(UV), "pip", "sync", "--quiet", "--python", str(venv / "bin" / "python"),
         "--require-hashes", str(REPO / "requirements-compose.lock")],
        check=True, env=env,
    )  # fmt: skip
    return venv / "bin" / "podman-compose"


@pytest.fixture
def project(
    podman_compose: Path, prod_image: BuiltImage, dev_image: BuiltImage
) -> Iterator[tuple[list[str], dict[str, str]]]:
    """compose.yaml as a uniquely named project with the session's images; down at the end."""
    port = free_port()
    env = {
        **os.environ,
        "DSJOB_DEV_IMAGE": dev_image.ref,
        "DSJOB_PROD_IMAGE": prod_image.ref,
        "DSJOB_EMULATOR_PORT": str(port),
        "JUPYTER_PORT": str(free_port()),
    }
    base = [str(podman_compose), "-p", f"dsjob-test-{port}", "-f", str(REPO / "compose.yaml")]
    yield base, env
    subprocess.run([*base, "down", "-t", "2"], env=env, capture_output=True, check=False)


def test_compose_job_publishes_to_the_compose_emulator(
    project: tuple[list[str], dict[str, str]],
) -> None:
    """`run --rm job` reaches the emulator by service name and publishes a manifest there."""
    base, env = project
    up = subprocess.run(
        [*base, "up", "-d", "emulator"], env=env, capture_output=True, text=True, check=False
    )
    assert up.returncode == 0, up.stdout + up.stderr
    port = env["DSJOB_EMULATOR_PORT"]
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2):
                break
        except OSError:
            assert time.monotonic() < deadline, "the compose emulator never answered"
            time.sleep(0.5)
    run = subprocess.run(
        [*base, "run", "--rm", "job"], env=env, capture_output=True, text=True, check=False,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = json.loads(next(x for x in reversed(run.stdout.splitlines()) if x.startswith("{")))
    assert status["status"] == "succeeded"
    s3 = client("s3", f"http://127.0.0.1:{port}")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="dsjob-output").get("Contents", [])]
    assert any(k.endswith(f"manifests/{status['run_id']}.json") for k in keys), keys
