"""What a run records about itself: the outputs' object metadata and the manifest body."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any

from dsjob import version
from dsjob.storage import sha256_file

if TYPE_CHECKING:
    from dsjob.config import JobConfig
    from dsjob.storage import FetchedFile


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "dsjob": version()}
    for dist in ("duckdb", "boto3", "botocore", "pandas", "numpy"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def output_metadata(
    cfg: JobConfig, started: datetime, fetched: dict[str, FetchedFile]
) -> dict[str, str]:
    """The object metadata every output of the run carries (record-count is added per file)."""
    meta = {
        "generated-at": started.isoformat(timespec="seconds"),
        "dsjob-version": version(),
        "dataset": cfg.dataset,
        "input-etag": fetched["input"].etag,
    }
    for name in ("script", "package", "transform"):
        if name in fetched:
            meta[f"{name}-sha256"] = sha256_file(fetched[name].path)
    return meta


def manifest_body(
    cfg: JobConfig,
    *,
    started: datetime,
    fetched: dict[str, FetchedFile],
    rows_in: int | None,
    rows_out: int | None,
    dropped: dict[str, int],
    timings: dict[str, float],
    mode: str,
) -> dict[str, Any]:
    """The run manifest: config, inputs with their checksums, counts, timings, versions."""
    inputs: dict[str, Any] = {}
    for name, item in fetched.items():
        entry: dict[str, Any] = {"source": item.source, "bytes": item.size, "etag": item.etag}
        # The model and code that made the outputs are named by their content: an ETag
        # need not be an MD5 of the bytes, and a multipart upload's is not (S3 API
        # Reference, CompleteMultipartUpload). The input is not hashed: it may be gigabytes.
        if name in ("model", "script", "package", "transform"):
            entry["sha256"] = sha256_file(item.path)
        inputs[name] = entry
    return {
        "run_id": cfg.run_id,
        "status": "succeeded",
        "mode": mode,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": cfg.redacted(),
        "inputs": inputs,
        "counts": {"rows_in": rows_in, "rows_out": rows_out, "dropped": dropped},
        "timings": timings,
        "versions": _versions(),
    }
