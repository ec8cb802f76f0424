"""cdk-nag findings we accept, each with the reason recorded next to the construct."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, Validations

if TYPE_CHECKING:
    from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Accept one finding (``AwsSolutions-IAM5[Resource::...]``) on a construct and its children."""
    Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))
