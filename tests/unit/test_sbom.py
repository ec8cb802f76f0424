"""dsjob.sbom: the venv checked against a CycloneDX document's pkg:pypi components."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest

from dsjob import sbom

pytestmark = pytest.mark.unit


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _document(path: Path, versions: dict[str, str]) -> Path:
    """A minimal CycloneDX 1.6 document listing these distributions and one Debian package."""
    components = [
        {"type": "library", "name": n, "version": v, "purl": f"pkg:pypi/{n}@{v}"}
        for n, v in versions.items()
    ]
    components.append(
        {"type": "library", "name": "tini", "version": "0.19", "purl": "pkg:deb/debian/tini@0.19"}
    )
    path.write_text(
        json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": components})
    )
    return path


def _venv() -> dict[str, str]:
    return {
        _norm(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if d.metadata["Name"] and _norm(d.metadata["Name"]) != "dsjob"
    }


def test_matching_venv_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An SBOM listing exactly the installed distributions passes the health check."""
    monkeypatch.setenv(sbom.SBOM_ENV, str(_document(tmp_path / "sbom.json", _venv())))
    ok, detail = sbom.check()
    assert ok, detail
    assert "match" in detail


def test_changed_version_and_extra_package_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version that differs and a distribution the SBOM lacks are both named."""
    listed = _venv()
    listed["boto3"] = "0.0.1"
    del listed["click"]
    monkeypatch.setenv(sbom.SBOM_ENV, str(_document(tmp_path / "sbom.json", listed)))
    ok, detail = sbom.check()
    assert not ok
    assert "boto3: SBOM 0.0.1, installed" in detail
    assert "click: installed" in detail
    assert "not in the SBOM" in detail


def test_missing_sbom_file_fails_and_unset_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configured SBOM that is missing fails; no SBOM configured (no image) passes."""
    monkeypatch.setenv(sbom.SBOM_ENV, str(tmp_path / "absent.json"))
    ok, detail = sbom.check()
    assert not ok
    assert "absent.json" in detail
    monkeypatch.delenv(sbom.SBOM_ENV)
    assert sbom.check() == (True, f"no SBOM to compare (set {sbom.SBOM_ENV})")
