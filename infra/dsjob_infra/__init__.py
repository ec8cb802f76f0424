"""The dsjob pipeline as a CDK app: storage, the ECS job, the workflow running it, a schedule.

The CDK classes load lazily, so ``python -m dsjob_infra.ecr`` (push and deploy look-ups)
needs boto3 only and does not start jsii.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PipelineSettings", "PipelineStack", "build_app"]


def __getattr__(name: str) -> Any:  # noqa: ANN401 - module attributes of any kind
    """Import the stack module (and with it aws_cdk) on first use of a CDK name."""
    if name in {"PipelineStack", "build_app"}:
        from dsjob_infra import stack  # noqa: PLC0415 - the lazy import is the point

        return getattr(stack, name)
    if name == "PipelineSettings":
        from dsjob_infra.settings import PipelineSettings  # noqa: PLC0415

        return PipelineSettings
    raise AttributeError(name)
