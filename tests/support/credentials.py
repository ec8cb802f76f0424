"""The emulator's fake AWS credentials and region, as environment variables or client kwargs."""

from __future__ import annotations

from typing import Any

REGION = "us-east-1"
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"

# The keys alone, for an environment whose region is set elsewhere.
FAKE_KEYS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}
FAKE_ENV = {**FAKE_KEYS, "AWS_DEFAULT_REGION": REGION}


def client(service: str, endpoint: str, **extra: Any) -> Any:
    """A boto3 client for `service` on the emulator at `endpoint`, with the fake credentials."""
    import boto3  # noqa: PLC0415 - keep the helper importable without boto3 loaded

    factory: Any = boto3.client  # the stubs' overloads want a literal service name
    return factory(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        **extra,
    )
