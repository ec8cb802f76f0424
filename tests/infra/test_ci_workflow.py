"""The CI template for users is a valid GitHub workflow that pushes to ECR via OIDC on main only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.support.paths import REPO

pytestmark = pytest.mark.infra

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    # The bundled schema: no network needed.
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def _workflow() -> dict[str, Any]:
    # ruamel (check-jsonschema's YAML parser) keeps `on` a string key, as GitHub reads it.
    loaded: dict[str, Any] = YAML(typ="safe").load(WORKFLOW.read_text())
    return loaded


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_workflow_matches_the_github_workflow_schema():
    """check-jsonschema's bundled GitHub workflow schema accepts ci.yml."""
    result = _validate(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    """The same check fails a workflow whose job lacks runs-on (so the test above can fail)."""
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  build:\n    steps:\n      - run: echo hi\n")
    assert _validate(broken).returncode != 0


def test_tests_job_runs_lint_typecheck_unit_and_integration():
    """The test job runs make lint, typecheck, test-unit and test-integration."""
    runs = _runs(_workflow()["jobs"]["test"])
    for target in ("make lint", "make typecheck", "make test-unit", "make test-integration"):
        assert target in runs


def test_image_job_builds_with_cache_and_health_checks():
    """The image job builds the prod target with the GHA cache and runs dsjob health in it."""
    job = _workflow()["jobs"]["image"]
    build = next(
        s for s in job["steps"] if s.get("uses", "").startswith("docker/build-push-action")
    )
    assert build["with"]["target"] == "prod"
    assert build["with"]["cache-from"] == "type=gha"
    assert "dsjob" in _runs(job)
    assert "health" in _runs(job)


def test_push_job_uses_oidc_on_main_only():
    """The push job runs on main pushes only, with id-token: write and a role to assume."""
    workflow = _workflow()
    assert workflow["permissions"] == {"contents": "read"}
    job = workflow["jobs"]["push"]
    assert job["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert job["permissions"]["id-token"] == "write"
    assert set(job["needs"]) == {"test", "image"}
    creds = next(
        s
        for s in job["steps"]
        if s.get("uses", "").startswith("aws-actions/configure-aws-credentials")
    )
    assert creds["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    text = WORKFLOW.read_text()
    assert "aws-access-key-id" not in text
    assert "secrets.AWS" not in text
