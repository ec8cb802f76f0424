"""ECR and stack look-ups for `make ml-push` and `make infra-deploy`, with boto3 only.

    python -m dsjob_infra.ecr login  [--region R] [--env E] [--repository NAME] IMAGE[:TAG] ...
    python -m dsjob_infra.ecr digest [--region R] [--env E] [--repository NAME] --tag TAG
    python -m dsjob_infra.ecr target [--region R]
    python -m dsjob_infra.ecr platform [--region R] [--env E]

The region is --region, else AWS_REGION, else AWS_DEFAULT_REGION or the profile's
(botocore reads only the latter two, so AWS_REGION is applied here). The repository is
--repository, else the ``RepositoryName`` output of the environment's repository stack,
else (no such stack yet, e.g. a registry test) the image's own name.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from typing import TYPE_CHECKING

from dsjob_infra.settings import PLATFORMS, stack_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    import boto3


class LookupFailedError(Exception):
    """A look-up found nothing usable; the message says what to do."""


def session(region: str | None) -> boto3.Session:
    """A boto3 session in the region the user named (AWS_REGION counts, unlike in botocore)."""
    import boto3  # noqa: PLC0415 - keep `--help` fast

    chosen = region or os.environ.get("AWS_REGION") or None
    result = boto3.Session(region_name=chosen)
    if result.region_name is None:
        raise LookupFailedError("no AWS region: set AWS_REGION or pass --region")
    return result


def account_of(aws: boto3.Session) -> str:
    """The caller's account id (STS GetCallerIdentity)."""
    return str(aws.client("sts").get_caller_identity()["Account"])


def stack_outputs(aws: boto3.Session, name: str) -> dict[str, str] | None:
    """A stack's outputs by key, or None when the stack does not exist."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    try:
        stacks = aws.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
    except ClientError as error:
        # CloudFormation answers a missing stack with ValidationError "... does not exist".
        if "does not exist" in str(error):
            return None
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def repository_name(
    aws: boto3.Session, account: str, environment: str, fallback: str, explicit: str | None = None
) -> str:
    """--repository, else the repository stack's RepositoryName output, else ``fallback``."""
    if explicit:
        return explicit
    name = stack_name(environment, account, str(aws.region_name), "repository")
    outputs = stack_outputs(aws, name)
    if outputs and outputs.get("RepositoryName"):
        return outputs["RepositoryName"]
    print(f"note: no stack {name}; pushing to the repository {fallback!r}", file=sys.stderr)  # noqa: T201
    return fallback


def image_digest(aws: boto3.Session, account: str, repository: str, tag: str) -> str:
    """The digest ECR holds for ``repository:tag``; fails naming what to push or deploy."""
    ecr = aws.client("ecr")
    where = f"{account}/{aws.region_name}"
    try:
        images = ecr.describe_images(
            registryId=account, repositoryName=repository, imageIds=[{"imageTag": tag}]
        )["imageDetails"]
    except ecr.exceptions.RepositoryNotFoundException:
        raise LookupFailedError(
            f"ECR repository {repository!r} does not exist in {where}: "
            "run `make infra-repository` first"
        ) from None
    except ecr.exceptions.ImageNotFoundException:
        images = []
    if not images:
        raise LookupFailedError(
            f"image {repository}:{tag} is not in ECR ({where}): push it with `make ml-push` "
            "from that commit, or deploy a pushed tag with IMAGE_TAG=..."
        )
    return str(images[0]["imageDigest"])


def login(aws: boto3.Session, account: str, repositories: Sequence[str]) -> tuple[str, str]:
    """The registry host and a login password, after checking each repository exists."""
    ecr = aws.client("ecr")
    for repo in sorted(set(repositories)):
        try:
            ecr.describe_repositories(registryId=account, repositoryNames=[repo])
        except ecr.exceptions.RepositoryNotFoundException:
            raise LookupFailedError(
                f"ECR repository {repo!r} does not exist in {account}/{aws.region_name}"
            ) from None
    auth = ecr.get_authorization_token(registryIds=[account])["authorizationData"][0]
    user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
    if user != "AWS":
        raise LookupFailedError(f"unexpected ECR token user {user!r}")
    # ECR registry host names: <account>.dkr.ecr.<region>.amazonaws.com (ECR User Guide,
    # "Private registry concepts").
    return f"{account}.dkr.ecr.{aws.region_name}.amazonaws.com", password


def _split(image: str) -> tuple[str, str]:
    """``[registry/]name[:tag]`` -> (name, tag); the tag defaults to latest, as engines do."""
    last = image.rsplit("/", 1)[-1]
    name, _, tag = last.partition(":")
    return name, tag or "latest"


def _run(args: argparse.Namespace) -> None:
    aws = session(args.region)
    if args.command == "target":
        print(f"aws://{account_of(aws)}/{aws.region_name}")  # noqa: T201
        return
    account = account_of(aws)
    if args.command == "platform":
        name = stack_name(args.env, account, str(aws.region_name), "repository")
        outputs = stack_outputs(aws, name) or {}
        print(outputs.get("ImagePlatform", PLATFORMS["X86_64"]))  # noqa: T201
        return
    if args.command == "digest":
        repo = repository_name(aws, account, args.env, args.fallback, args.repository)
        print(image_digest(aws, account, repo, args.tag))  # noqa: T201
        return
    pairs = [_split(image) for image in args.images]
    repos = [repository_name(aws, account, args.env, name, args.repository) for name, _ in pairs]
    host, password = login(aws, account, repos)
    # Line 1 the registry, line 2 the password (for the engine's stdin), then one target each.
    print(host)  # noqa: T201
    print(password)  # noqa: T201
    for repo, (_, tag) in zip(repos, pairs, strict=True):
        print(f"{host}/{repo}:{tag}")  # noqa: T201


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run one look-up, print its result; errors exit 1 with a message."""
    parser = argparse.ArgumentParser(prog="python -m dsjob_infra.ecr")
    parser.add_argument("--region", default="")
    parser.add_argument("--env", default=os.environ.get("ENV") or "dev")
    parser.add_argument("--repository", default="")
    commands = parser.add_subparsers(dest="command", required=True)
    log_in = commands.add_parser("login", help="log in to ECR and name each image's target")
    log_in.add_argument("images", nargs="+")
    digest = commands.add_parser("digest", help="the digest of a pushed tag (fails if missing)")
    digest.add_argument("--tag", required=True)
    digest.add_argument("--fallback", default="ds-preprocessing")
    commands.add_parser("target", help="aws://ACCOUNT/REGION for cdk bootstrap")
    commands.add_parser("platform", help="the --platform the task's image must be built for")
    args = parser.parse_args(argv)
    try:
        _run(args)
    except LookupFailedError as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
