"""ECR and stack look-ups for ml-push and infra-deploy, against moto's ECR, STS, CloudFormation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.integration

PUSH = REPO / "scripts" / "push-ecr.sh"
ACCOUNT = "123456789012"  # moto's default account


def _client(local_aws: Any, service: str, region: str = "us-east-1") -> Any:
    factory: Any = boto3.client
    return factory(service, endpoint_url=local_aws.endpoint, region_name=region)


def _env(local_aws: Any, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k not in ("REGISTRY", "ENV")},
        "AWS_ENDPOINT_URL": local_aws.endpoint,
        "CONTAINER_ENGINE": "podman",
        **extra,
    }


def _repository_stack(local_aws: Any, environment: str, repository: str) -> None:
    """A stand-in for the repository stack: same name, same RepositoryName output."""
    template = {
        "Resources": {
            "Marker": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {
                    "Name": f"/stand-in/{environment}",
                    "Type": "String",
                    "Value": repository,
                },
            }
        },
        "Outputs": {"RepositoryName": {"Value": repository}},
    }
    _client(local_aws, "cloudformation").create_stack(
        StackName=f"ds-preprocessing-{environment}-repository-{ACCOUNT}-us-east-1",
        TemplateBody=json.dumps(template),
    )


def _push(local_aws: Any, *images: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PUSH), "--dry-run", "--force", *images],
        capture_output=True,
        text=True,
        env=_env(local_aws, **env),
        check=False,
        timeout=120,
    )


def test_push_goes_to_the_aws_region_not_the_profile_region(local_aws):
    """AWS_REGION=eu-west-1 beats AWS_DEFAULT_REGION=us-east-1: the registry is in eu-west-1."""
    _client(local_aws, "ecr", "eu-west-1").create_repository(repositoryName="ds-preprocessing")
    proc = _push(
        local_aws,
        "ds-preprocessing:0.1.0-abc",
        AWS_REGION="eu-west-1",
        AWS_DEFAULT_REGION="us-east-1",
    )
    assert proc.returncode == 0, proc.stderr
    host = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"
    assert proc.stdout.strip() == f"{host}/ds-preprocessing:0.1.0-abc"


def test_push_targets_the_repository_the_stack_names(local_aws):
    """ENV=dev with a repository stack: the image goes to its RepositoryName output."""
    _repository_stack(local_aws, "dev", "team-dev-images")
    _client(local_aws, "ecr").create_repository(repositoryName="team-dev-images")
    proc = _push(local_aws, "ds-preprocessing:0.1.0-abc", ENV="dev")
    assert proc.returncode == 0, proc.stderr
    host = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
    assert proc.stdout.strip() == f"{host}/team-dev-images:0.1.0-abc"
    # No prod stack: the image name is the repository, which must exist.
    missing = _push(local_aws, "ds-preprocessing:0.1.0-abc", ENV="prod")
    assert missing.returncode == 1
    assert "'ds-preprocessing' does not exist" in missing.stderr


def _deploy(local_aws: Any, tag: str, fake_bin: Path) -> subprocess.CompletedProcess[str]:
    """Run make infra-deploy with an npx on PATH that only records that it was called."""
    fake_bin.mkdir(exist_ok=True)
    npx = fake_bin / "npx"
    npx.write_text(f'#!/bin/sh\necho "$@" > {fake_bin / "npx-called"}\n')
    npx.chmod(0o755)
    env = _env(local_aws, PATH=f"{fake_bin}:{os.environ['PATH']}")
    return subprocess.run(
        ["make", "--no-print-directory", "infra-deploy", f"IMAGE_TAG={tag}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )


def test_infra_deploy_refuses_a_tag_that_is_not_in_ecr(local_aws, tmp_path):
    """No image at IMAGE_TAG: make infra-deploy fails naming the tag, and never runs the CDK CLI."""
    _client(local_aws, "ecr").create_repository(repositoryName="ds-preprocessing")
    proc = _deploy(local_aws, "0.1.0-notpushed", tmp_path / "bin")
    assert proc.returncode != 0
    assert "image ds-preprocessing:0.1.0-notpushed is not in ECR" in proc.stderr
    assert "make ml-push" in proc.stderr
    assert not (tmp_path / "bin" / "npx-called").exists()


def test_infra_deploy_pins_the_pushed_tags_digest(local_aws, tmp_path):
    """A pushed tag: deploy passes its ECR digest to the CDK app (imageDigest=sha256:...)."""
    ecr = _client(local_aws, "ecr")
    ecr.create_repository(repositoryName="ds-preprocessing")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": "sha256:" + "1" * 64,
        },
        "layers": [],
    }
    ecr.put_image(
        repositoryName="ds-preprocessing",
        imageManifest=json.dumps(manifest),
        imageTag="0.1.0-pushed",
    )
    [image] = ecr.describe_images(
        repositoryName="ds-preprocessing", imageIds=[{"imageTag": "0.1.0-pushed"}]
    )["imageDetails"]
    proc = _deploy(local_aws, "0.1.0-pushed", tmp_path / "bin")
    assert proc.returncode == 0, proc.stderr
    called = (tmp_path / "bin" / "npx-called").read_text()
    assert f"-c imageDigest={image['imageDigest']}" in called
    assert re.search(r"deploy --require-approval broadening DsPreprocessing-dev$", called.strip())


def test_bootstrap_target_names_account_and_region(local_aws):
    """The bootstrap target is aws://<account>/<AWS_REGION>, not the profile's region."""
    proc = subprocess.run(
        [sys.executable, "-m", "dsjob_infra.ecr", "target"],
        capture_output=True,
        text=True,
        env=_env(local_aws, AWS_REGION="eu-central-1", PYTHONPATH=str(REPO / "infra")),
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"aws://{ACCOUNT}/eu-central-1"
