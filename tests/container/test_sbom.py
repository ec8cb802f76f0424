"""The SBOM every image carries: valid CycloneDX, and exactly the image's packages."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO

from .imagekit import BuiltImage, Engine, base_image

pytestmark = [pytest.mark.container, pytest.mark.timeout(600)]  # on top of the builds

SBOM = "/opt/dsjob/sbom.cdx.json"
UV = REPO / ".cache" / "tools" / "bin" / "uv"
# Validation against the CycloneDX 1.6 JSON schema that cyclonedx-python-lib ships.
VALIDATE = """
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())
print(error)
sys.exit(error is not None)
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with cyclonedx-python-lib from requirements-sbom.lock (the builds' own lock)."""
    venv = tmp_path_factory.mktemp("sbom") / "venv"
    subprocess.run([str(UV), "venv", "--quiet", "--python", "python3", str(venv)], check=True)
    subprocess.run(
        [str(UV), "pip", "sync", "--quiet", "--python", str(venv / "bin" / "python"),
         "--require-hashes", str(REPO / "requirements-sbom.lock")],
        check=True, env={"UV_NATIVE_TLS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return venv / "bin" / "python"


def _sbom(engine: Engine, image: str) -> tuple[str, dict[str, Any]]:
    text = engine("run", "--rm", "--entrypoint", "cat", image, SBOM).stdout
    return text, json.loads(text)


def _in_image(engine: Engine, image: str, *cmd: str) -> str:
    # The host's pinned uv, mounted read-only: prod has no pip and no uv by design.
    return engine(
        "run", "--rm", "--user", "0", "-v", f"{UV}:/usr/local/bin/uv:ro",
        "--entrypoint", cmd[0], image, *cmd[1:],
    ).stdout  # fmt: skip


@pytest.mark.parametrize("which", ["prod", "dev"])
def test_sbom_is_valid_cyclonedx_listing_the_images_packages(
    engine: Engine, request: pytest.FixtureRequest, validator: Path, tmp_path: Path, which: str
) -> None:
    """The SBOM validates against the library's schema and lists `pip list` and dpkg exactly."""
    image: BuiltImage = request.getfixturevalue(f"{which}_image")
    text, sbom = _sbom(engine, image.ref)
    (tmp_path / "sbom.json").write_text(text)
    check = subprocess.run(
        [str(validator), "-c", VALIDATE, str(tmp_path / "sbom.json")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    components = sbom["components"]
    pypi = {_norm(c["name"]): c for c in components if c.get("purl", "").startswith("pkg:pypi/")}
    listed = json.loads(
        _in_image(engine, image.ref, "uv", "pip", "list", "--python", "/opt/venv/bin/python",
                  "--format", "json")
    )  # fmt: skip
    installed = {_norm(p["name"]): p["version"] for p in listed if _norm(p["name"]) != "dsjob"}
    assert {n: c["version"] for n, c in pypi.items()} == installed
    lock = image_lock(engine, image.ref)
    for name, component in pypi.items():
        hashes = {h["content"] for h in component.get("hashes", [])}
        assert hashes, f"{name} has no hash"
        assert hashes <= lock.get((name, component["version"]), set()), name
    dpkg = _in_image(engine, image.ref, "dpkg-query", "-W", "-f", "${Package} ${Version}\\n")
    debs = {tuple(line.split(" ", 1)) for line in dpkg.splitlines() if line}
    sbom_debs = {
        (c["name"], c["version"]) for c in components if c.get("purl", "").startswith("pkg:deb/")
    }
    assert sbom_debs == debs
    base = [c for c in components if c.get("bom-ref") == "base-image"]
    assert len(base) == 1
    reference = {p["name"]: p["value"] for p in base[0]["properties"]}["dsjob:reference"]
    assert reference == base_image()


def image_lock(engine: Engine, image: str) -> dict[tuple[str, str], set[str]]:
    """(name, version) -> sha256 hashes of the lock the image carries."""
    text = engine("run", "--rm", "--entrypoint", "cat", image, "/opt/dsjob/requirements.lock")
    pins: dict[tuple[str, str], set[str]] = {}
    current: tuple[str, str] | None = None
    for line in text.stdout.splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if pin:
            current = (_norm(pin.group(1)), pin.group(2))
            pins.setdefault(current, set())
        if current:
            pins[current].update(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return pins


def test_health_fails_when_the_venv_no_longer_matches_the_sbom(
    engine: Engine, prod_image: BuiltImage, tmp_path: Path
) -> None:
    """An SBOM naming another version of a package makes `dsjob health` fail and name it."""
    _, sbom = _sbom(engine, prod_image.ref)
    for component in sbom["components"]:
        if component["name"] == "six":
            component["version"] = "0.0.1"
    (tmp_path / "sbom.json").write_text(json.dumps(sbom))
    proc = engine(
        "run", "--rm", "-v", f"{tmp_path / 'sbom.json'}:/tmp/sbom.json:ro",
        "-e", "DSJOB_SBOM_FILE=/tmp/sbom.json", "--entrypoint", "dsjob", prod_image.ref, "health",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL sbom: six: SBOM 0.0.1, installed" in proc.stdout


def test_make_ml_sbom_exports_the_document(
    engine: Engine, prod_image: BuiltImage, tmp_path: Path
) -> None:
    """`make ml-sbom` writes the image's SBOM to SBOM_OUT."""
    out = tmp_path / "exported.cdx.json"
    proc = subprocess.run(
        ["make", "--no-print-directory", "ml-sbom", f"SBOM_IMAGE={prod_image.ref}",
         f"SBOM_OUT={out}", f"CONTAINER_ENGINE={engine.command}"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_text() == _sbom(engine, prod_image.ref)[0]
