"""Deployment settings read once from CDK context into a frozen dataclass."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

ENVIRONMENTS = ("dev", "prod")
# Where the job runs: an ECS Fargate task, or the `lambda` image as a Lambda function.
COMPUTES = ("fargate", "lambda")
# Lambda Developer Guide, "Lambda quotas": memory 128-10,240 MB, /tmp 512-10,240 MB,
# timeout at most 900 s.
LAMBDA_MEMORY_MIB = (128, 10240)
LAMBDA_EPHEMERAL_MIB = (512, 10240)
LAMBDA_MAX_TIMEOUT_MINUTES = 15
# States.ArrayRange makes at most 1000 items (Step Functions, "Intrinsic functions").
MAX_PARTITIONS = 1000
# Fargate's valid task sizes: vCPU units -> allowed memory (MiB) range and step.
_FARGATE_MEMORY: dict[int, tuple[int, int, int]] = {
    256: (512, 2048, 512),
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
    8192: (16384, 61440, 4096),
    16384: (32768, 122880, 8192),
}
# Every context key a user may pass with `-c key=value`, mapped to its field.
CONTEXT_KEYS = {
    "environment": "environment",
    "cpu": "cpu",
    "memoryMiB": "memory_mib",
    "ephemeralStorageGiB": "ephemeral_storage_gib",
    "imageTag": "image_tag",
    "repositoryName": "repository_name",
    "paramPrefix": "param_prefix",
    "inputKey": "input_key",
    "outputPrefix": "output_prefix",
    "schedule": "schedule",
    "scheduleEnabled": "schedule_enabled",
    "maxConcurrency": "max_concurrency",
    "transientRetries": "transient_retries",
    "retryIntervalSeconds": "retry_interval_seconds",
    "logRetentionDays": "log_retention_days",
    "keepImages": "keep_images",
    "imageDigest": "image_digest",
    "cpuArchitecture": "cpu_architecture",
    "alarmEmail": "alarm_email",
    "taskTimeoutMinutes": "task_timeout_minutes",
    "executionTimeoutHours": "execution_timeout_hours",
    "partitions": "partitions",
    "noncurrentDays": "noncurrent_days",
    "compute": "compute",
    "lambdaMemoryMiB": "lambda_memory_mib",
    "lambdaEphemeralStorageMiB": "lambda_ephemeral_storage_mib",
    "lambdaTimeoutMinutes": "lambda_timeout_minutes",
    "lambdaReservedConcurrency": "lambda_reserved_concurrency",
}
# The task's CPU architecture -> the --platform its image must be built for.
PLATFORMS = {"X86_64": "linux/amd64", "ARM64": "linux/arm64"}


# EventBridge Scheduler cron fields (User Guide, "Schedule types", cron-based):
# minute hour day-of-month month day-of-week year. One tick a month at most means a
# single minute and hour, and either one day of the month (15, L, LW, 15W) with no
# weekday, or no day of the month with one weekday of it (MON#1, 6L).
_ONE_NUMBER = re.compile(r"\d{1,2}")
_ONE_DAY_OF_MONTH = re.compile(r"\d{1,2}W?|LW?")
_ONE_WEEKDAY_OF_MONTH = re.compile(r"(\d|[A-Z]{3})(#[1-5]|L)")


def fires_monthly(schedule: str) -> bool:
    """Whether a schedule expression fires at most once in any month (``at(...)`` fires once).

    The tick's run id is ``monthly-YYYY-MM``: a schedule that fired twice in one month
    would give both ticks one run id, and the second would publish nothing.
    """
    if schedule.startswith("at("):
        return True
    if not schedule.startswith("cron(") or not schedule.endswith(")"):
        return False  # rate(...) is minutes, hours or days
    fields = schedule[len("cron(") : -1].split()
    if len(fields) != 6:  # noqa: PLR2004 - the six cron fields
        return False
    minute, hour, day, _month, weekday, _year = fields
    if not (_ONE_NUMBER.fullmatch(minute) and _ONE_NUMBER.fullmatch(hour)):
        return False
    if weekday == "?":
        return bool(_ONE_DAY_OF_MONTH.fullmatch(day))
    return day == "?" and bool(_ONE_WEEKDAY_OF_MONTH.fullmatch(weekday.upper()))


@dataclass(frozen=True)
class PipelineSettings:
    """What differs between deployments; every field has a context key (``CONTEXT_KEYS``)."""

    environment: str
    cpu: int = 2048
    memory_mib: int = 4096
    # DuckDB spills to the work dir; 21 GiB is Fargate's free minimum, 50 leaves room for spill.
    ephemeral_storage_gib: int = 50
    # Tags are immutable: deploy names the tag `make ml-push` pushes (<version>-<git sha>).
    image_tag: str = "latest"
    repository_name: str = "ds-preprocessing"
    param_prefix: str = "/ds/preprocessing"
    input_key: str = "raw/members.csv"
    output_prefix: str = "processed/"
    # EventBridge Scheduler cron: minute hour day-of-month month day-of-week year, in UTC.
    schedule: str = "cron(0 9 15 * ? *)"
    schedule_enabled: bool = True
    max_concurrency: int = 10
    transient_retries: int = 3
    retry_interval_seconds: int = 60
    log_retention_days: int = 90
    keep_images: int = 20
    # sha256:... of the image at image_tag, looked up in ECR by `make infra-deploy`
    # (dsjob_infra.ecr digest); the task pins it, so a re-pushed or expired tag cannot
    # change what runs. Empty only for synth without an account.
    image_digest: str = ""
    # X86_64 or ARM64 (Graviton); the image must be built for PLATFORMS[cpu_architecture].
    cpu_architecture: str = "X86_64"
    # Where FAILED/TIMED_OUT executions are mailed (the subscription must be confirmed).
    alarm_email: str = ""
    task_timeout_minutes: int = 240
    execution_timeout_hours: int = 12
    # Hash partitions of a fan-out run (DSJOB_PARTITIONS); the input may override it.
    partitions: int = 16
    # Days a noncurrent output version (or a lone delete marker) is kept.
    noncurrent_days: int = 30
    # fargate (default) or lambda: the same state machine invokes the `lambda` image's
    # function instead of running the task (single runs only; fan-out needs fargate).
    compute: str = "fargate"
    lambda_memory_mib: int = 2048
    # /tmp holds the download, DuckDB's spill and the output (about 3x the input).
    lambda_ephemeral_storage_mib: int = 2048
    lambda_timeout_minutes: int = LAMBDA_MAX_TIMEOUT_MINUTES
    # 0: no reservation (the account's unreserved pool); N: at most N runs at once.
    lambda_reserved_concurrency: int = 0

    @property
    def image_platform(self) -> str:
        """The --platform the image for this task must be built for (linux/amd64, linux/arm64)."""
        return PLATFORMS[self.cpu_architecture]

    def __post_init__(self) -> None:
        """Fail synth early with a message naming the bad setting."""
        if self.environment not in ENVIRONMENTS:
            raise ValueError(f"environment must be one of {ENVIRONMENTS}, got {self.environment!r}")
        if self.cpu not in _FARGATE_MEMORY:
            raise ValueError(f"cpu must be one of {sorted(_FARGATE_MEMORY)}, got {self.cpu}")
        low, high, step = _FARGATE_MEMORY[self.cpu]
        if not (low <= self.memory_mib <= high and (self.memory_mib - low) % step == 0):
            raise ValueError(
                f"memoryMiB={self.memory_mib} is not valid with cpu={self.cpu} on Fargate "
                f"({low}..{high} in steps of {step})"
            )
        if not 21 <= self.ephemeral_storage_gib <= 200:  # noqa: PLR2004 - Fargate's limits
            raise ValueError(
                f"ephemeralStorageGiB must be 21..200, got {self.ephemeral_storage_gib}"
            )
        self._check_deployment()
        self._check_lambda()

    def _check_lambda(self) -> None:
        """The compute choice and the function's sizes, within Lambda's quotas."""
        if self.compute not in COMPUTES:
            raise ValueError(f"compute must be one of {COMPUTES}, got {self.compute!r}")
        for key, value, (low, high) in (
            ("lambdaMemoryMiB", self.lambda_memory_mib, LAMBDA_MEMORY_MIB),
            ("lambdaEphemeralStorageMiB", self.lambda_ephemeral_storage_mib, LAMBDA_EPHEMERAL_MIB),
            ("lambdaTimeoutMinutes", self.lambda_timeout_minutes, (1, LAMBDA_MAX_TIMEOUT_MINUTES)),
        ):
            if not low <= value <= high:
                raise ValueError(f"{key} must be {low}..{high} on Lambda, got {value}")
        if self.lambda_reserved_concurrency < 0:
            raise ValueError(
                f"lambdaReservedConcurrency must be 0 (none) or more, "
                f"got {self.lambda_reserved_concurrency}"
            )

    def _check_schedule(self) -> None:
        """An EventBridge Scheduler expression that fires at most once a month."""
        if not re.fullmatch(r"(cron|rate|at)\(.+\)", self.schedule):
            raise ValueError(f"schedule must look like cron(...), got {self.schedule!r}")
        if not fires_monthly(self.schedule):
            raise ValueError(
                "schedule must fire at most once a month (one minute, one hour, one day of "
                "the month or one weekday of it, e.g. cron(0 9 15 * ? *)): a tick's run id "
                f"is monthly-YYYY-MM (dsjob.schedule), got {self.schedule!r}"
            )

    def _check_deployment(self) -> None:
        """The image, alarm, naming and schedule settings."""
        if self.cpu_architecture not in PLATFORMS:
            raise ValueError(
                f"cpuArchitecture must be one of {sorted(PLATFORMS)}, got {self.cpu_architecture!r}"
            )
        if self.image_digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", self.image_digest):
            raise ValueError(f"imageDigest must be sha256:<64 hex>, got {self.image_digest!r}")
        if self.alarm_email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", self.alarm_email):
            raise ValueError(f"alarmEmail is not an email address: {self.alarm_email!r}")
        if not self.output_prefix.endswith("/") or re.search(r"['{}\\]", self.output_prefix):
            raise ValueError(
                f"outputPrefix must end with '/' and hold no quotes, braces or backslashes: "
                f"{self.output_prefix!r}"
            )
        if self.partitions > MAX_PARTITIONS:
            raise ValueError(f"partitions must be at most {MAX_PARTITIONS}, got {self.partitions}")
        self._check_schedule()
        if not self.param_prefix.startswith("/") or self.param_prefix.endswith("/"):
            raise ValueError(f"paramPrefix must start and not end with '/': {self.param_prefix!r}")
        for name in (
            "max_concurrency",
            "transient_retries",
            "retry_interval_seconds",
            "keep_images",
            "task_timeout_minutes",
            "execution_timeout_hours",
            "partitions",
            "noncurrent_days",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @classmethod
    def from_context(cls, get: Any) -> PipelineSettings:  # noqa: ANN401 - node.try_get_context
        """Build settings from a context getter (``app.node.try_get_context``).

        Context given on the command line arrives as strings; each value is
        converted to the field's declared type.
        """
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, name in CONTEXT_KEYS.items():
            raw = get(key)
            if raw is None:
                continue
            if types[name] == "int":
                values[name] = int(raw)
            elif types[name] == "bool":
                values[name] = raw if isinstance(raw, bool) else str(raw).lower() in {"1", "true"}
            else:
                values[name] = str(raw)
        if "environment" not in values:
            raise ValueError("pass the environment: -c environment=dev (or prod)")
        return cls(**values)


def stack_name(environment: str, account: str, region: str, part: str = "") -> str:
    """``ds-preprocessing-<env>[-<part>]-<account>-<region>``: the pipeline or its repository."""
    middle = f"{environment}-{part}" if part else environment
    return f"ds-preprocessing-{middle}-{account}-{region}"
