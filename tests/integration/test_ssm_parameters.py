"""config.read_parameters on the emulator's SSM: every page, direct children, SecureStrings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
import pytest

from dsjob.config import read_parameters, resolve

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

    from tests.support.emulator import LocalServe

pytestmark = pytest.mark.integration

PREFIX = "/t/ssm"


def _ssm(endpoint: str) -> SSMClient:
    return boto3.client("ssm", endpoint_url=endpoint, region_name="us-east-1")


def test_every_page_is_read_and_only_direct_children(local_aws: LocalServe) -> None:
    """25 parameters (3 pages of 10) are read by short name; nested and sibling paths are not."""
    ssm = _ssm(local_aws.endpoint)
    for i in range(25):
        ssm.put_parameter(Name=f"{PREFIX}/p{i:02d}", Value=f"v{i}", Type="String")
    ssm.put_parameter(Name=f"{PREFIX}/token", Value="s3cr3t", Type="SecureString")
    ssm.put_parameter(Name=f"{PREFIX}/list", Value="a,b", Type="StringList")
    ssm.put_parameter(Name=f"{PREFIX}/Xray", Value="x", Type="String")
    # GetParametersByPath with Recursive=False returns direct children only
    # (AWS Systems Manager API Reference); a sibling path sharing the text is not under it.
    ssm.put_parameter(Name=f"{PREFIX}/deeper/x", Value="no", Type="String")
    ssm.put_parameter(Name=f"{PREFIX}-other/y", Value="no", Type="String")

    values, secure = read_parameters(ssm, PREFIX)

    assert values == {
        **{f"p{i:02d}": f"v{i}" for i in range(25)},
        "token": "s3cr3t",
        "list": "a,b",
        "Xray": "x",
    }
    assert secure == frozenset({"token"})


def test_an_unknown_prefix_reads_nothing(local_aws: LocalServe) -> None:
    """A prefix with no parameters gives no values and no SecureStrings (not an error)."""
    assert read_parameters(_ssm(local_aws.endpoint), "/nothing/here") == ({}, frozenset())


def test_resolve_reads_ssm_through_the_prefix_and_redacts_secure_strings(
    local_aws: LocalServe,
) -> None:
    """SSM values fill what flags and DSJOB_* leave; a SecureString value is redacted."""
    ssm = _ssm(local_aws.endpoint)
    for name, value in {
        "input-bucket": "in",
        "input-key": "raw/a.csv",
        "output-bucket": "out",
        "artifact-bucket": "art",
        "id-column": "pk",
    }.items():
        ssm.put_parameter(Name=f"{PREFIX}/{name}", Value=value, Type="String")
    ssm.put_parameter(Name=f"{PREFIX}/dataset", Value="hidden", Type="SecureString")

    cfg = resolve(
        {"param-prefix": f"{PREFIX}/", "output-bucket": "flagged"},
        {"DSJOB_INPUT_KEY": "raw/b.csv"},
        lambda prefix: read_parameters(ssm, prefix),
    )

    assert (str(cfg.input), str(cfg.output)) == ("s3://in/raw/b.csv", "s3://flagged/processed/")
    assert (cfg.id_column, cfg.dataset) == ("pk", "hidden")
    assert cfg.redacted()["dataset"] == "***"
    picked = {n: cfg.sources[n] for n in ("output-bucket", "input-key", "input-bucket")}
    assert picked == {"output-bucket": "flag", "input-key": "env", "input-bucket": "ssm"}
