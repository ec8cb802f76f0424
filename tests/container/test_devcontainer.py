"""The dev container: devcontainer.json matches the pins and the schema; the CLI brings it up."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.paths import REPO
from tests.support.versions import VERSIONS

from .imagekit import base_image

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .imagekit import BuiltImage, Engine

pytestmark = pytest.mark.devcontainer

CONFIG = REPO / ".devcontainer" / "devcontainer.json"
# A copy of the Dev Container spec's schema (devcontainers/spec, schemas/), kept in the
# repo so the check needs no network; see .devcontainer/schema/README.md.
SCHEMA = REPO / ".devcontainer" / "schema" / "devContainer.base.schema.json"
DOCKERFILE = REPO / "docker" / "Dockerfile"
PROFILE = "dsjob-devcontainer-test"
UP_TIMEOUT_S = 1500


def read_jsonc(path: Path) -> dict[str, Any]:
    """devcontainer.json as a dict: JSON with whole-line // comments (how ours is written)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    data = json.loads("\n".join(line for line in lines if not line.lstrip().startswith("//")))
    assert isinstance(data, dict)
    return data


def dockerfile_args() -> set[str]:
    """Every ARG the Dockerfile declares."""
    return set(re.findall(r"^ARG\s+(\w+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE))


def check_schema(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema (a dev dependency) on a JSONC file against the vendored schema."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--force-filetype",
            "json5",
            "--schemafile",
            str(SCHEMA),
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.unit
def test_build_args_match_versions_conf() -> None:
    """Build args equal config/versions.conf, and every Dockerfile ARG pinned there is passed."""
    build = read_jsonc(CONFIG)["build"]
    assert (build["dockerfile"], build["context"], build["target"]) == (
        "../docker/Dockerfile",
        "..",
        "dev",
    )
    assert re.search(r"^FROM \S+ AS dev$", DOCKERFILE.read_text(), re.MULTILINE)
    args: dict[str, str] = build["args"]
    declared = dockerfile_args()
    assert set(args) <= declared, f"args the Dockerfile does not declare: {set(args) - declared}"
    pinned = declared & set(VERSIONS)
    assert pinned >= {"BASE_IMAGE", "UV_VERSION", "DUCKDB_CLI_VERSION"}
    assert pinned <= set(args), f"pinned in versions.conf but not passed: {pinned - set(args)}"
    for name in pinned:
        assert args[name] == VERSIONS[name], f"{name}: {args[name]} != {VERSIONS[name]}"


@pytest.mark.unit
def test_devcontainer_json_validates_against_the_schema(tmp_path: Path) -> None:
    """devcontainer.json is valid under the Dev Container schema, which rejects a broken copy."""
    result = check_schema(CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr

    broken = read_jsonc(CONFIG)
    broken["forwardPorts"] = ["not a port"]
    broken["remoteUsr"] = "dev"
    (tmp_path / "devcontainer.json").write_text(json.dumps(broken))
    rejected = check_schema(tmp_path / "devcontainer.json")
    assert rejected.returncode != 0
    assert "remoteUsr" in rejected.stdout


@pytest.mark.unit
def test_offline_by_design_and_no_secrets() -> None:
    """No Features (they download at build time), no credentials, ~/.aws only read-only."""
    config = read_jsonc(CONFIG)
    assert "features" not in config
    assert config["remoteUser"] == "dev"
    assert config["updateRemoteUserUID"] is True
    assert config["mounts"] == [
        "source=${localEnv:HOME}/.aws,target=/home/dev/.aws,type=bind,readonly"
    ]
    env = json.dumps(config.get("containerEnv", {})) + json.dumps(config.get("remoteEnv", {}))
    assert not re.search(r"SECRET|ACCESS_KEY|SESSION_TOKEN|PASSWORD", env, re.IGNORECASE)
    assert {8890, 4566} <= set(config["forwardPorts"])


@pytest.mark.unit
def test_initialize_passes_only_the_aws_settings_that_are_set(tmp_path: Path) -> None:
    """initialize.sh creates ~/.aws and never writes an empty AWS_PROFILE (boto3 rejects it)."""
    copy = tmp_path / ".devcontainer"
    shutil.copytree(REPO / ".devcontainer", copy, ignore=shutil.ignore_patterns(".host.env"))
    shutil.copytree(REPO / "scripts" / "lib", tmp_path / "scripts" / "lib")  # it sources common.sh
    home = tmp_path / "home"
    home.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base["HOME"] = str(home)

    subprocess.run(["bash", str(copy / "initialize.sh")], env=base, check=True)
    assert (home / ".aws").is_dir()
    lines = (copy / ".host.env").read_text().splitlines()
    assert [line for line in lines if not line.startswith("#")] == []

    subprocess.run(
        ["bash", str(copy / "initialize.sh")],
        env={
            **base,
            "AWS_PROFILE": "team-dev",
            "AWS_REGION": "eu-west-1",
            "AWS_DEFAULT_REGION": "",
        },
        check=True,
    )
    lines = (copy / ".host.env").read_text().splitlines()
    assert [line for line in lines if not line.startswith("#")] == [
        "AWS_PROFILE=team-dev",
        "AWS_REGION=eu-west-1",
    ]


# --------------------------------------------------------------------------- the real thing


@dataclass
class DevContainer:
    """A dev container brought up by `devcontainer up` on a copy of the repository."""

    cli: str
    engine: Engine
    workspace: Path
    env: dict[str, str]
    container_id: str

    def exec(self, *command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`devcontainer exec` in the workspace (as the remote user, with its environment)."""
        return subprocess.run(
            [
                self.cli,
                "exec",
                "--docker-path",
                self.engine.command,
                "--workspace-folder",
                str(self.workspace),
                *command,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def devcontainer_cli() -> str:
    """The devcontainer CLI; a failure (not a skip) when DSJOB_REQUIRE_DEVCONTAINER=1."""
    path = shutil.which("devcontainer")
    if path is None:
        message = "the devcontainer CLI is not installed (scripts/ci/setup-devcontainer-cli.sh)"
        if os.environ.get("DSJOB_REQUIRE_DEVCONTAINER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_the_cli_reads_the_configuration(
    devcontainer_cli: str, engine: Engine, tmp_path: Path
) -> None:
    """`devcontainer read-configuration` parses devcontainer.json and resolves its variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [
            devcontainer_cli,
            "read-configuration",
            "--docker-path",
            engine.command,  # it looks for a running container first
            "--workspace-folder",
            str(REPO),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    read = json.loads(result.stdout.strip().splitlines()[-1])
    config = read["configuration"]
    folder = read["workspace"]["workspaceFolder"]
    assert config["build"]["args"] == read_jsonc(CONFIG)["build"]["args"]
    assert config["containerEnv"]["PYTHONPATH"] == f"{folder}/src"
    assert config["mounts"] == [f"source={tmp_path}/.aws,target=/home/dev/.aws,type=bind,readonly"]
    assert config["runArgs"] == ["--env-file", f"{REPO}/.devcontainer/.host.env"]


def copy_repository(dest: Path) -> None:
    """The repository's files (tracked and new, not ignored) into dest: what a clone has."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def adapt_to_this_machine(config: dict[str, Any], engine: Engine) -> dict[str, Any]:
    """The project's devcontainer.json, adjusted only where this CI machine differs from a laptop.

    - BASE_IMAGE: no public registry is reachable here; CI bootstraps its own base image.
    - The CA bundle as a build secret, exactly as scripts/build-ml-container.sh passes it:
      downloads inside the build go through an intercepting proxy.
    - Rootful podman: the CLI adds --userns=keep-id for podman, which only rootless podman
      supports; --userns=host (later on the command line) takes its place.
    """
    adapted: dict[str, Any] = json.loads(json.dumps(config))
    adapted["build"]["args"]["BASE_IMAGE"] = base_image()
    options: list[str] = []
    bundle = Path(os.environ.get("CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))
    if bundle.is_file():
        options += ["--secret", f"id=ca,src={bundle}"]
    if engine.name == "podman":
        options += ["--format", "docker"]  # as the build script: one layer cache for both
        rootless = engine("info", "--format", "{{.Host.Security.Rootless}}").stdout.strip()
        if rootless != "true":
            adapted["runArgs"] = [*adapted.get("runArgs", []), "--userns=host"]
    adapted["build"]["options"] = options
    return adapted


@pytest.fixture(scope="module")
def devcontainer(
    devcontainer_cli: str,
    engine: Engine,
    dev_image: BuiltImage,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DevContainer]:
    """`devcontainer up` on a clean copy of the repo, with a fake ~/.aws holding one profile."""
    del dev_image  # built first: it warms the layer cache the devcontainer build reuses
    root = tmp_path_factory.mktemp("devcontainer")
    workspace = root / "dsjob"
    copy_repository(workspace)
    config = adapt_to_this_machine(read_jsonc(CONFIG), engine)
    (workspace / ".devcontainer" / "devcontainer.json").write_text(json.dumps(config, indent=2))
    # Keep the copy consistent with itself: the unit tests run inside check that the
    # devcontainer's build args equal config/versions.conf.
    versions = workspace / "config" / "versions.conf"
    versions.write_text(
        re.sub(
            r"(?m)^BASE_IMAGE=.*$",
            f"BASE_IMAGE={config['build']['args']['BASE_IMAGE']}",
            versions.read_text(),
        )
    )
    # ... and the Dockerfile's default base, which a unit test holds equal to versions.conf.
    dockerfile = workspace / "docker" / "Dockerfile"
    dockerfile.write_text(
        re.sub(
            r"(?m)^ARG BASE_IMAGE=\S+$",
            f"ARG BASE_IMAGE={config['build']['args']['BASE_IMAGE']}",
            dockerfile.read_text(),
        )
    )
    if os.getuid() == 0:
        # updateRemoteUserUID cannot give dev uid 0: let the image's dev (1000) own the copy.
        subprocess.run(["chown", "-R", "1000:1000", str(workspace)], check=True)
    home = root / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "config").write_text(f"[profile {PROFILE}]\nregion = eu-west-1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DSJOB_"))}
    env.update(HOME=str(home), AWS_PROFILE=PROFILE)

    up = subprocess.run(
        [
            devcontainer_cli,
            "up",
            "--docker-path",
            engine.command,
            "--workspace-folder",
            str(workspace),
            "--log-format",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=UP_TIMEOUT_S,
        check=False,
    )
    (root / "devcontainer-up.log").write_text(up.stderr)  # the whole log, for a failure
    label = f"label=devcontainer.local_folder={workspace}"
    try:
        result = json.loads(up.stdout.strip().splitlines()[-1]) if up.stdout.strip() else {}
        errors = [line for line in up.stderr.splitlines() if '"level":3' in line or "rror" in line]
        assert up.returncode == 0, f"devcontainer up failed: {result}\n" + "\n".join(errors[-40:])
        assert result["outcome"] == "success", result
        assert result["remoteUser"] == "dev"
        yield DevContainer(devcontainer_cli, engine, workspace, env, result["containerId"])
    finally:
        images = engine("ps", "-a", "--filter", label, "--format", "{{.Image}}", check=False)
        for container in engine("ps", "-aq", "--filter", label, check=False).stdout.split():
            engine("rm", "-f", container, check=False)
        # The CLI's image tags for this workspace (vsc-<folder>-<hash>[-uid]); layers are shared.
        for image in set(images.stdout.split()):
            engine("rmi", image, check=False)
            engine("rmi", image.removesuffix(":latest").removesuffix("-uid"), check=False)


def test_dsjob_health_passes_inside(devcontainer: DevContainer) -> None:
    """`devcontainer exec ... dsjob health` exits 0: imports, lock, tmp dir all fine."""
    result = devcontainer.exec("dsjob", "health")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout


def test_unit_tests_pass_inside(devcontainer: DevContainer) -> None:
    """`devcontainer exec ... make test-unit` passes, on the image's venv (no .venv is built)."""
    result = devcontainer.exec("make", "test-unit", timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert " passed" in result.stdout
    assert not (devcontainer.workspace / ".venv").exists()


def test_workspace_sources_win_over_the_installed_copy(devcontainer: DevContainer) -> None:
    """Python in the container is the image's /opt/venv, and `import dsjob` is the workspace's."""
    result = devcontainer.exec(
        "python", "-c", "import dsjob, sys; print(sys.executable); print(dsjob.__file__)"
    )
    assert result.returncode == 0, result.stderr
    executable, module = result.stdout.split()[-2:]
    assert executable == "/opt/venv/bin/python"
    assert module == "/workspaces/dsjob/src/dsjob/__init__.py"


def test_host_aws_profile_is_passed_through_read_only(devcontainer: DevContainer) -> None:
    """AWS_PROFILE reaches boto3 with the mounted ~/.aws config, and the mount is read-only."""
    result = devcontainer.exec(
        "python", "-c", "import boto3; s = boto3.Session(); print(s.profile_name, s.region_name)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == [PROFILE, "eu-west-1"]
    write = devcontainer.exec("touch", "/home/dev/.aws/written-from-container")
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr


def test_files_created_inside_belong_to_the_workspace_owner(devcontainer: DevContainer) -> None:
    """A file the dev user creates in the workspace is owned by whoever owns the checkout."""
    result = devcontainer.exec("touch", "created-in-container.txt")
    assert result.returncode == 0, result.stderr
    created = devcontainer.workspace / "created-in-container.txt"
    assert created.stat().st_uid == devcontainer.workspace.stat().st_uid
