"""boto3 clients with sane retries, and translation of AWS failures into dsjob errors."""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsjob.errors import ConfigError, DsjobError, MissingObjectError, TransientError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_sts import STSClient

LOGGER = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Budget:
    """How long one client may wait, and how often it tries, before the job gives up."""

    connect_timeout: float
    read_timeout: float
    max_attempts: int
    mode: str


# The config read is one small GetParametersByPath page that answers in milliseconds:
# an endpoint that does not answer within seconds will not answer at all, so the job
# says so fast (a hung endpoint fails in 3 x 5 s plus at most 1 + 2 s of backoff).
# Standard mode: exponential backoff with jitter, capped (botocore "Retries" guide,
# docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html).
CONFIG_BUDGET = Budget(connect_timeout=3, read_timeout=5, max_attempts=3, mode="standard")
# Transfers move gigabytes through throttled APIs: adaptive mode adds client-side rate
# limiting on top of standard retries, so the job backs off on throttling instead of
# failing, and only then exits "transient". AWS_MAX_ATTEMPTS overrides the attempts.
TRANSFER_BUDGET = Budget(connect_timeout=10, read_timeout=60, max_attempts=8, mode="adaptive")
# Kept for callers that read the transfer default by name.
MAX_ATTEMPTS = TRANSFER_BUDGET.max_attempts
_BUDGETS = {"ssm": CONFIG_BUDGET, "sts": CONFIG_BUDGET}

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


def region_name(env: Mapping[str, str]) -> str:
    """The region the job talks to: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1."""
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def endpoint_hint(env: Mapping[str, str]) -> str:
    """What to check when an endpoint does not answer, for the error message."""
    endpoint = env.get("AWS_ENDPOINT_URL")
    if endpoint:
        return f"AWS_ENDPOINT_URL={endpoint}: is `dsjob local serve` running?"
    return "check the network path to AWS (NAT gateway or VPC endpoints)"


@dataclass
class Clients:
    """Lazily created boto3 clients sharing one session (boto3 is imported on first use)."""

    region: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict)
    _session: Any = None

    def _client(self, service: str) -> Any:  # noqa: ANN401 - boto3 clients are dynamically typed
        if service not in self._cache:
            import boto3  # noqa: PLC0415 - deferred: boto3 costs ~150 ms at start-up
            from botocore.config import Config  # noqa: PLC0415

            if self._session is None:
                self._session = boto3.session.Session()
            region = self.region or region_name(os.environ)
            check_region(self._session, region)
            budget = _BUDGETS.get(service, TRANSFER_BUDGET)
            attempts = budget.max_attempts
            if budget is TRANSFER_BUDGET and os.environ.get("AWS_MAX_ATTEMPTS"):
                attempts = int(os.environ["AWS_MAX_ATTEMPTS"])
            # total_max_attempts counts the first try too; botocore's "max_attempts"
            # key counts retries only (botocore Config reference), AWS_MAX_ATTEMPTS totals.
            retries: Any = {"mode": budget.mode, "total_max_attempts": attempts}
            config = Config(
                retries=retries,
                connect_timeout=budget.connect_timeout,
                read_timeout=budget.read_timeout,
            )
            # AWS_ENDPOINT_URL (the emulator) is honoured by boto3 itself.
            # The service name is one of the literals below; the stubs' overloads want it spelled.
            client = self._session.client(service, region_name=region, config=config)
            log_retries(client, attempts)
            self._cache[service] = client
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

    def s3_with(self, config: Any) -> S3Client:  # noqa: ANN401 - a botocore Config
        """Another S3 client with its own `config`, on the same session (not cached).

        A client from a new session reloads botocore's service models (hundreds of
        milliseconds); one from this session reuses them.
        """
        self._client("s3")  # creates the session, checks the region
        client: S3Client = self._session.client(
            "s3", region_name=self.region or region_name(os.environ), config=config
        )
        return client


def check_region(session: Any, region: str) -> None:  # noqa: ANN401 - a boto3 Session
    """Refuse a region that no AWS partition has, naming the nearest real one.

    The list is botocore's own partition and endpoint data (``endpoints.json``), so it
    follows the installed SDK rather than a hand-kept list. Without this, a typo such
    as ``eu-wset-1`` would surface as an unreachable host after every retry (exit 5).
    """
    known = {
        name
        for partition in session.get_available_partitions()
        for name in session.get_available_regions("ssm", partition_name=partition)
    }
    if region in known:
        return
    nearest = difflib.get_close_matches(region, sorted(known), n=1)
    hint = f" (did you mean {nearest[0]}?)" if nearest else ""
    raise ConfigError(
        f"AWS region {region!r} does not exist{hint}: set AWS_REGION to one of the regions "
        f"botocore {_botocore_version()} knows"
    )


def _botocore_version() -> str:
    import botocore  # noqa: PLC0415

    return str(botocore.__version__)


def log_retries(client: Any, max_attempts: int) -> None:  # noqa: ANN401 - a boto3 client
    """Log every retry botocore makes on `client`, naming the endpoint and the reason.

    botocore emits ``needs-retry`` after each attempt (with the response or the caught
    exception) and ``request-created`` before each attempt, whose request context
    carries the attempt number; together they say what failed and that a retry follows.
    """
    endpoint = client.meta.endpoint_url

    def remember(
        request_dict: dict[str, Any],
        response: Any = None,  # noqa: ANN401 - (http response, parsed) or None
        caught_exception: BaseException | None = None,
        **_: Any,  # noqa: ANN401 - botocore passes more keyword arguments
    ) -> None:
        request_dict["context"]["dsjob_last_failure"] = _failure(response, caught_exception)

    def announce(request: Any, operation_name: str, **_: Any) -> None:  # noqa: ANN401
        context = getattr(request, "context", {}) or {}
        attempt = context.get("retries", {}).get("attempt", 1)
        if attempt > 1:
            LOGGER.warning(
                "retrying %s %s at %s (attempt %d of %d) after: %s",
                client.meta.service_model.service_id,
                operation_name,
                endpoint,
                attempt,
                max_attempts,
                context.get("dsjob_last_failure") or "an error",
                extra={"endpoint": endpoint, "attempt": attempt},
            )

    client.meta.events.register("needs-retry", remember)
    client.meta.events.register("request-created", announce)


def _failure(response: Any, exc: BaseException | None) -> str | None:  # noqa: ANN401
    if exc is not None:
        return f"{type(exc).__name__}: {exc}"
    if response is None:
        return None
    http, parsed = response
    code = (parsed or {}).get("Error", {}).get("Code")
    status = getattr(http, "status_code", 0)
    return f"HTTP {status} {code}" if code else (f"HTTP {status}" if status >= 400 else None)  # noqa: PLR2004


def refusal(code: str) -> type[DsjobError]:
    """The dsjob error class for an S3 error code with no HTTP status of its own.

    A DeleteObjects answer lists one per key it did not delete (S3 API Reference,
    DeleteObjects, ``Error``): the same codes a whole request fails with.
    """
    if code in _TRANSIENT_CODES:
        return TransientError
    if code in _DENIED_CODES:
        return ConfigError
    return DsjobError


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
        return TransientError(
            f"{what}: connection failed after retries: {exc}; {endpoint_hint(os.environ)}"
        )
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(f"{what}: {exc}")
    if isinstance(exc, bx.FlexibleChecksumError):
        # botocore checks a GET's body against the checksum S3 sent with it (on by
        # default since 1.36, response_checksum_validation=when_supported; S3 API
        # Reference, GetObject, x-amz-checksum-mode) and raises this only while the
        # body is read, outside its retries: bytes bent on the way, worth a new run.
        where = f"s3://{bucket}/{key}" if bucket else key
        return TransientError(f"{what}: the body of {where} did not match its checksum ({exc})")
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
