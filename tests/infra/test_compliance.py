"""The synthesized template passes cdk-nag's AwsSolutions pack and cfn-lint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.infra

CFN_LINT = Path(sys.executable).parent / "cfn-lint"
# W3005: CDK makes the state machine DependsOn its role's policy as well as
# GetAtt-ing the role; the redundant edge is CDK's, harmless, and not ours to drop.
CFN_LINT_IGNORED = ["W3005"]


def test_cdk_nag_aws_solutions_reports_no_unacknowledged_finding(synth):
    """cdk-nag's AwsSolutions pack, run on the stack, reports success."""
    from cdk_nag import AwsSolutionsChecks  # noqa: PLC0415

    report = AwsSolutionsChecks().validate_scope(synth.stack)
    findings = [
        f"{v.rule_name}: {[r.resource_logical_id for r in v.violating_resources]}"
        for v in report.violations
    ]
    assert report.success, findings


def test_every_acknowledged_finding_carries_a_reason(synth):
    """Each cdk-nag acknowledgement in the tree has a reason of at least a sentence."""
    from aws_cdk import Validations  # noqa: PLC0415

    key = Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    acknowledged = [
        entry.data
        for node in synth.stack.node.find_all()
        for entry in node.node.metadata
        if entry.type == key
    ]
    # Each entry maps "Annotation::<rule>" to the reason given in code.
    reasons = {rule: reason for data in acknowledged for rule, reason in data.items()}
    assert "Annotation::AwsSolutions-S1" in reasons
    assert any("AwsSolutions-IAM5" in rule for rule in reasons)
    for rule, reason in reasons.items():
        assert len(reason) >= 30, (rule, reason)


def test_an_unjustified_wildcard_fails_synth(tmp_path):
    """A new wildcard grant without an acknowledgement makes synth fail (nag is wired in)."""
    from aws_cdk import aws_iam as iam  # noqa: PLC0415

    from dsjob_infra import build_app  # noqa: PLC0415

    app, stack = build_app({"environment": "dev"}, str(tmp_path))
    stack.compute.task_role.add_to_policy(iam.PolicyStatement(actions=["s3:*"], resources=["*"]))
    with pytest.raises(RuntimeError, match=r"AwsSolutions-IAM5\[Action::s3:\*\]"):
        app.synth()


def test_every_checkov_skip_carries_a_reason(synth):
    """Each checkov skip written into the templates names a check and gives a reason."""
    skips = [
        (logical_id, skip)
        for template in (synth.resources, synth.repository["Resources"])
        for logical_id, resource in template.items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert {skip["id"] for _, skip in skips} >= {"CKV_AWS_18", "CKV_AWS_158", "CKV_AWS_136"}
    for logical_id, skip in skips:
        assert skip["id"].startswith("CKV_AWS_"), logical_id
        assert len(skip["comment"]) >= 60, (logical_id, skip)


def test_cfn_lint_passes_on_the_synthesized_templates(synth):
    """cfn-lint finds nothing in either template (one CDK-made warning ignored, see above)."""
    templates = sorted(str(p) for p in synth.path.parent.glob("*.template.json"))
    assert len(templates) == 2
    result = subprocess.run(
        [str(CFN_LINT), "--ignore-checks", *CFN_LINT_IGNORED, "--", *templates],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_synth_time_is_modest(synth):
    """One synth (jsii start-up, the stack, cdk-nag) stays well under two minutes.

    About 15 s on an idle 2-core machine; the bound leaves room for a busy CI host.
    """
    assert synth.seconds < 120
