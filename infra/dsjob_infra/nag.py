"""cdk-nag and checkov findings we accept, each with the reason recorded next to the construct."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, CfnResource, Validations

if TYPE_CHECKING:
    from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Accept one finding (``AwsSolutions-IAM5[Resource::...]``) on a construct and its children."""
    Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))


def skip_checkov(construct: IConstruct, check: str, reason: str) -> None:
    """Skip one checkov check on a construct's CloudFormation resource, saying why.

    checkov reads ``Metadata.checkov.skip`` (``id``, ``comment``) from each resource of a
    CloudFormation template; ``make lint`` runs it on the synthesized templates.
    """
    resource = construct if isinstance(construct, CfnResource) else construct.node.default_child
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource to annotate")
    current = resource.get_metadata("checkov") or {"skip": []}
    current["skip"].append({"id": check, "comment": reason})
    resource.add_metadata("checkov", current)
