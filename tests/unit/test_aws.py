"""Translation of AWS failures into errors with the right exit code and message."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from dsjob.aws import Clients, check_region, translate
from dsjob.errors import ConfigError, ExitCode, MissingObjectError, TransientError

pytestmark = pytest.mark.unit


def client_error(code: str, status: int) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetObject")


def test_missing_key_names_bucket_and_key() -> None:
    """A 404 becomes an input error (exit 3) naming s3://bucket/key."""
    error = translate(client_error("404", 404), "fetching", bucket="b", key="k/x.csv")
    assert isinstance(error, MissingObjectError)
    assert error.exit_code == ExitCode.INPUT
    assert "s3://b/k/x.csv" in str(error)


@pytest.mark.parametrize(
    ("code", "status"), [("SlowDown", 503), ("ThrottlingException", 400), ("Weird", 500)]
)
def test_throttling_and_5xx_are_transient(code: str, status: int) -> None:
    """Throttling and server errors map to the retryable exit code 5."""
    error = translate(client_error(code, status), "uploading", bucket="b", key="k")
    assert isinstance(error, TransientError)
    assert error.exit_code == ExitCode.TRANSIENT


def test_access_denied_is_a_config_error() -> None:
    """AccessDenied is a permissions problem (exit 2), not worth a retry."""
    error = translate(client_error("AccessDenied", 403), "reading", bucket="b", key="k")
    assert isinstance(error, ConfigError)
    assert "permissions" in str(error)


def test_connection_and_credentials() -> None:
    """A dropped connection is transient; missing credentials say what to set."""
    assert isinstance(
        translate(EndpointConnectionError(endpoint_url="http://x"), "x"), TransientError
    )
    creds = translate(NoCredentialsError(), "reading SSM")
    assert isinstance(creds, ConfigError)
    assert "AWS_PROFILE" in str(creds)


def test_region_that_does_not_exist_names_the_nearest() -> None:
    """A misspelt region is a config error (exit 2) naming the real one, from botocore's data."""
    session = boto3.session.Session()
    check_region(session, "eu-west-1")
    check_region(session, "cn-north-1")  # another partition's region is real too
    with pytest.raises(ConfigError, match=r"'eu-wset-1' does not exist \(did you mean eu-west-1"):
        check_region(session, "eu-wset-1")


def test_config_reads_have_a_short_budget_and_transfers_a_long_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SSM gets seconds and 3 attempts; S3 keeps 60 s reads and AWS_MAX_ATTEMPTS attempts."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    clients = Clients()
    ssm: Any = clients.ssm.meta.config
    s3: Any = clients.s3.meta.config
    assert (ssm.connect_timeout, ssm.read_timeout) == (3, 5)
    assert ssm.retries == {"mode": "standard", "total_max_attempts": 3}
    assert s3.read_timeout == 60
    assert s3.retries == {"mode": "adaptive", "total_max_attempts": 4}
