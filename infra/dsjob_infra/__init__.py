"""The dsjob pipeline as a CDK app: storage, the ECS job, the workflow running it, a schedule."""

from dsjob_infra.settings import PipelineSettings
from dsjob_infra.stack import PipelineStack, build_app

__all__ = ["PipelineSettings", "PipelineStack", "build_app"]
