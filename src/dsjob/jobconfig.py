"""The resolved configuration of one run, and how it is shown (secrets redacted)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

_SECRET_NAME = re.compile(r"secret|password|passwd|token|credential|api[-_]?key", re.IGNORECASE)


@dataclass(frozen=True)
class S3Location:
    """An object (or, for outputs, a key prefix) in a bucket."""

    bucket: str
    key: str

    def __str__(self) -> str:
        """The s3:// URI."""
        return f"s3://{self.bucket}/{self.key}"


Location = S3Location | Path


@dataclass(frozen=True)
class JobConfig:
    """The resolved, validated configuration of one run (immutable, passed explicitly)."""

    run_id: str
    param_prefix: str
    input: Location
    output: S3Location | Path  # S3: bucket + output prefix; Path: local output directory
    model: Location | None = None
    script: Location | None = None
    package: Location | None = None
    transform: Location | None = None
    output_formats: tuple[str, ...] = ("parquet",)
    keep_outputs: int = 0
    dataset: str = "data"
    id_column: str = "id"
    on_bad_rows: str = "fail"
    script_timeout: float = 3600.0
    memory_limit: str | None = None
    threads: int | None = None
    work_root: Path | None = None
    local_mode: bool = False
    scheduled_time: str | None = None
    phase: str = "single"
    partition: int | None = None
    partitions: int = 16
    sources: Mapping[str, str] = field(default_factory=dict)
    secret_names: frozenset[str] = frozenset()

    def redacted(self) -> dict[str, Any]:
        """Config as plain data for logs and the manifest, secret-looking values hidden."""
        data: dict[str, Any] = {}
        for name in (
            "run_id",
            "param_prefix",
            "input",
            "output",
            "model",
            "script",
            "package",
            "transform",
            "output_formats",
            "keep_outputs",
            "dataset",
            "id_column",
            "on_bad_rows",
            "script_timeout",
            "memory_limit",
            "threads",
            "local_mode",
            "scheduled_time",
            "phase",
            "partition",
            "partitions",
        ):
            value = getattr(self, name)
            data[name] = (
                list(value)
                if isinstance(value, tuple)
                else (str(value) if isinstance(value, Path | S3Location) else value)
            )
        data["sources"] = dict(self.sources)
        return redact(data, self.secret_names)


def redact(data: dict[str, Any], secret_names: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Replace values whose key looks secret (or came from a SecureString) by `***`."""
    return {
        k: "***" if (_SECRET_NAME.search(k) or k in secret_names) and v is not None else v
        for k, v in data.items()
    }
