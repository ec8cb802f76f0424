"""Fixtures for the infra tests: one synth of the dev stack per session (jsii start-up is slow)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.paths import REPO

if TYPE_CHECKING:
    from aws_cdk.assertions import Template

sys.path.insert(0, str(REPO / "infra"))


@dataclass(frozen=True)
class Synth:
    """The synthesized dev stacks: the CDK objects, the templates as dicts, and where it is."""

    app: Any
    stack: Any
    template: Template
    resources: dict[str, Any]
    path: Path
    seconds: float
    repository: dict[str, Any]

    def of_type(self, resource_type: str) -> dict[str, Any]:
        """The resources of one CloudFormation type, by logical id."""
        return {k: v for k, v in self.resources.items() if v["Type"] == resource_type}

    def one(self, resource_type: str) -> dict[str, Any]:
        """The properties of the only resource of a type (fails if there are more)."""
        found = self.of_type(resource_type)
        assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
        properties: dict[str, Any] = next(iter(found.values()))["Properties"]
        return properties


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Synthesize the dev stack once, through app.synth() so cdk-nag's validation runs."""
    from dsjob_infra.node import silence_end_of_life_banner  # noqa: PLC0415

    silence_end_of_life_banner()
    from aws_cdk.assertions import Template  # noqa: PLC0415 - starts jsii; only when needed

    from dsjob_infra import build_app  # noqa: PLC0415

    outdir = tmp_path_factory.mktemp("cdk.out")
    started = time.monotonic()
    app, stack = build_app({"environment": "dev"}, str(outdir))
    app.synth()  # raises if cdk-nag (a policy validation plugin) reports a finding
    seconds = time.monotonic() - started
    path = outdir / f"{stack.artifact_id}.template.json"
    data = json.loads(path.read_text())
    repository = json.loads(
        (outdir / f"{stack.repository_stack.artifact_id}.template.json").read_text()
    )
    print(f"synth of {stack.stack_name}: {seconds:.1f} s")
    return Synth(
        app=app,
        stack=stack,
        template=Template.from_json(data),
        resources=data["Resources"],
        path=path,
        seconds=seconds,
        repository=repository,
    )
