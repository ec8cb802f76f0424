"""boto3 clients with sane retries, and translation of AWS failures into dsjob errors."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsjob.errors import ConfigError, DsjobError, MissingObjectError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_sts import STSClient

LOGGER = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
# Adaptive mode adds client-side rate limiting on top of standard retries: the job
# backs off on throttling instead of failing, and only then exits "transient".
# AWS_MAX_ATTEMPTS overrides it, as it does for any boto3 client.
MAX_ATTEMPTS = 8

_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestLimitExceeded",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket"})
_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "403", "Forbidden", "InvalidAccessKeyId"}
)


@dataclass
class Clients:
    """Lazily created boto3 clients sharing one session (boto3 is imported on first use)."""

    region: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    def _client(self, service: str) -> Any:  # noqa: ANN401 - boto3 clients are dynamically typed
        if service not in self._cache:
            import boto3  # noqa: PLC0415 - deferred: boto3 costs ~150 ms at start-up
            from botocore.config import Config  # noqa: PLC0415

            region = (
                self.region
                or os.environ.get("AWS_REGION")
                or os.environ.get("AWS_DEFAULT_REGION")
                or DEFAULT_REGION
            )
            attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or MAX_ATTEMPTS)
            config = Config(
                retries={"mode": "adaptive", "max_attempts": attempts},
                connect_timeout=10,
                read_timeout=60,
            )
            # AWS_ENDPOINT_URL (the emulator) is honoured by boto3 itself.
            # The service name is one of the literals above; the stubs' overloads want it spelled.
            self._cache[service] = boto3.session.Session().client(  # type: ignore[call-overload]
                service, region_name=region, config=config
            )
        return self._cache[service]

    @property
    def s3(self) -> S3Client:
        """The S3 client."""
        client: S3Client = self._client("s3")
        return client

    @property
    def ssm(self) -> SSMClient:
        """The SSM client."""
        client: SSMClient = self._client("ssm")
        return client

    @property
    def sts(self) -> STSClient:
        """The STS client."""
        client: STSClient = self._client("sts")
        return client


def translate(  # noqa: PLR0911 - one early return per kind of failure reads best
    exc: BaseException, what: str, *, bucket: str = "", key: str = ""
) -> DsjobError:
    """Turn a botocore/boto3 exception into the dsjob error a user can act on.

    Args:
        exc: the exception raised by boto3.
        what: a few words on what was being done ("downloading the input").
        bucket: the bucket involved, named in "missing" errors.
        key: the key involved, named in "missing" errors.
    """
    if isinstance(exc, DsjobError):
        return exc
    from botocore import exceptions as bx  # noqa: PLC0415 - only reached after boto3 was used

    if isinstance(exc, bx.ClientError):
        return _from_client_error(exc, what, bucket, key)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return ConfigError(
            f"{what}: no AWS credentials found; set AWS_PROFILE or run against the "
            "embedded emulator (`dsjob local serve`)"
        )
    if isinstance(exc, bx.NoRegionError):
        return ConfigError(f"{what}: no AWS region configured; set AWS_REGION")
    if isinstance(
        exc,
        bx.EndpointConnectionError
        | bx.ConnectionClosedError
        | bx.ReadTimeoutError
        | bx.ConnectTimeoutError
        | bx.ProxyConnectionError,
    ):
        return TransientError(f"{what}: connection failed after retries: {exc}")
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(f"{what}: {exc}")
    return DsjobError(f"{what}: {type(exc).__name__}: {exc}")


def _from_client_error(exc: Any, what: str, bucket: str, key: str) -> DsjobError:  # noqa: ANN401
    location = f"s3://{bucket}/{key}" if bucket else key
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _MISSING_CODES and location:
        if code == "NoSuchBucket" or (bucket and not key):
            return MissingObjectError(f"s3://{bucket} (bucket does not exist)")
        return MissingObjectError(location)
    if code in _TRANSIENT_CODES or status >= 500:  # noqa: PLR2004 - 5xx is the server's fault
        return TransientError(f"{what}: AWS answered {code or status}, retries exhausted")
    if code in _DENIED_CODES:
        where = f" to {location}" if location else ""
        return ConfigError(f"{what}: access denied{where} ({code}); check the role's permissions")
    return DsjobError(f"{what}: {code}: {error.get('Message', '')}")


def aws_errors() -> tuple[type[BaseException], ...]:
    """The exception types `translate` understands (for `except` clauses)."""
    from boto3.exceptions import Boto3Error  # noqa: PLC0415
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    return (BotoCoreError, ClientError, Boto3Error, ConnectionError, TimeoutError)
