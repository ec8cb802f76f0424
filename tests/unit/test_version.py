"""One version: pyproject.toml's [project] version, and every reader agrees with it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from ruamel.yaml import YAML

import dsjob
from tests.support.paths import DSJOB, REPO

pytestmark = pytest.mark.unit

SOURCE = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# A version no file but pyproject.toml could supply: the readers run in a copy of the
# tooling whose pyproject.toml says this, so a reader with its own copy of the number fails.
BUMPED = "9.8.7rc1"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build tooling (scripts, make, config, the CI template) beside a bumped pyproject."""
    root = tmp_path_factory.mktemp("tree")
    for name in ("scripts", "make", "config", ".github", "docker"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy2(REPO / "Makefile", root / "Makefile")
    text = (REPO / "pyproject.toml").read_text()
    bumped = re.sub(r'(?m)^version = "[^"]+"$', f'version = "{BUMPED}"', text, count=1)
    assert bumped != text
    (root / "pyproject.toml").write_text(bumped)
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "tree"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *argv],
            cwd=root, check=True, capture_output=True,
        )  # fmt: skip
    return root


def _bash(script: str, cwd: Path, **env: str) -> str:
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_package_and_the_cli_report_the_pyproject_version() -> None:
    """dsjob.version() (the metadata the manifest and output metadata carry) and --version."""
    assert dsjob.version() == SOURCE
    out = subprocess.run(
        [str(DSJOB), "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.split() == ["dsjob", SOURCE]


def test_the_shell_reader_is_the_pyproject_version(tree: Path) -> None:
    """project_version, which the build script, make and the CI template call."""
    assert _bash(". scripts/lib/common.sh && project_version", REPO).strip() == SOURCE
    assert _bash(". scripts/lib/common.sh && project_version", tree).strip() == BUMPED


def test_image_tag_label_and_sbom_version_follow_it(tree: Path) -> None:
    """The build script tags, labels and passes to the SBOM the same version."""
    out = _bash(
        "scripts/build-ml-container.sh --dry-run --target production",
        tree,
        CONTAINER_ENGINE="podman",
    )
    assert f"--build-arg VERSION={BUMPED} " in out
    assert f"--label org.opencontainers.image.version={BUMPED} " in out
    assert re.search(rf"--tag \S+:{re.escape(BUMPED)}-[0-9a-f]{{12}} ", out)


def test_the_deploy_tag_follows_it(tree: Path) -> None:
    """The IMAGE_TAG make deploys (infra-deploy) is <version>-<git sha>."""
    show = "make -s --no-print-directory --eval 'show-tag: ; @echo $(IMAGE_TAG)' show-tag"
    assert re.fullmatch(rf"{re.escape(BUMPED)}-[0-9a-f]{{12}}\n", _bash(show, tree))


def test_the_ci_template_tags_with_it(tree: Path, tmp_path: Path) -> None:
    """The CI template's tag step, run as written, writes tag=<version>-<git sha>."""
    workflow = YAML(typ="safe").load((tree / ".github" / "workflows" / "ci.yml").read_text())
    [step] = [s for job in workflow["jobs"].values() for s in job["steps"] if s.get("id") == "tag"]
    output = tmp_path / "github-output"
    _bash(step["run"], tree, GITHUB_OUTPUT=str(output))
    assert re.fullmatch(rf"tag={re.escape(BUMPED)}-[0-9a-f]{{12}}\n", output.read_text())
