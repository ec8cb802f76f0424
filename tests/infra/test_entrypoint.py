"""`make infra-synth` writes the template with no AWS account and no CDK CLI."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.infra


def test_make_infra_synth_writes_the_prod_template_without_an_account(tmp_path):
    """Running make infra-synth ENV=prod writes both prod stacks (placeholder account), quietly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    result = subprocess.run(
        ["make", "--no-print-directory", "infra-synth", "ENV=prod", f"INFRA_OUT={tmp_path}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # jsii's Node end-of-life banner arrived as Python b'...' reprs; it is silenced.
    assert "b'" not in result.stderr
    assert "end-of-life" not in result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "DsPreprocessingRepository-prod" in manifest["artifacts"]
    stack = manifest["artifacts"]["DsPreprocessing-prod"]
    assert stack["properties"]["stackName"] == "ds-preprocessing-prod-000000000000-us-east-1"
    template = json.loads((tmp_path / "DsPreprocessing-prod.template.json").read_text())
    clusters = [r for r in template["Resources"].values() if r["Type"] == "AWS::ECS::Cluster"]
    assert clusters[0]["Properties"]["ClusterName"] == "ds-preprocessing-prod"


def test_app_without_an_environment_says_how_to_pass_one(tmp_path):
    """infra/app.py without -c environment fails and names the flag to pass."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env.update(CDK_OUTDIR=str(tmp_path), CDK_CONTEXT_JSON="{}")
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "infra/app.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode != 0
    assert "error: pass the environment: -c environment=dev" in result.stderr
    assert "Traceback" not in result.stderr
