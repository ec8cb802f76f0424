"""`dsjob runs` and `dsjob outputs`: run records and current outputs under the output prefix.

A published run has `<prefix>manifests/<run-id>.json`; every CLI run on S3 also
has `<prefix>status/<run-id>.json`, and each task of a fan-out run
`<prefix>status/<run-id>/<task>.json` (failed runs have only those). The current
output of a dataset is named by `<prefix>current/<dataset>.json`; before that
pointer exists, the newest manifest of the dataset stands in for it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsjob.errors import ConfigError, MissingObjectError, TransientError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from dsjob.aws import Clients
    from dsjob.storage import OutputStore

LOGGER = logging.getLogger(__name__)


def output_store(
    flags: Mapping[str, str | None], clients: Clients | None
) -> tuple[OutputStore, str]:
    """The output store and prefix, by the job's precedence: flag > DSJOB_* > SSM > default."""
    from dsjob import config  # noqa: PLC0415
    from dsjob.localstore import LocalStore  # noqa: PLC0415
    from dsjob.s3store import S3Store  # noqa: PLC0415

    def given(name: str) -> str | None:
        return flags.get(name) or os.environ.get(config.env_name(name)) or None

    if given("output-dir"):
        return LocalStore(Path(str(given("output-dir"))).expanduser()), ""
    if clients is None:
        from dsjob.aws import Clients  # noqa: PLC0415

        clients = Clients()
    bucket, prefix = given("output-bucket"), given("output-prefix")
    if bucket is None or prefix is None:
        param_prefix = (given("param-prefix") or config.DEFAULT_PREFIX).rstrip("/")
        from dsjob.aws import aws_errors, translate  # noqa: PLC0415

        try:
            ssm = config.read_parameters(clients.ssm, param_prefix)[0]
        except aws_errors() as exc:
            raise translate(exc, f"reading SSM parameters under {param_prefix}") from exc
        bucket = bucket or ssm.get("output-bucket")
        prefix = prefix if prefix is not None else ssm.get("output-prefix", "processed/")
        if not bucket:
            raise ConfigError(
                f"no output bucket: pass --output-bucket or --output-dir, set "
                f"DSJOB_OUTPUT_BUCKET, or put {param_prefix}/output-bucket in SSM"
            )
    prefix = prefix.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return S3Store(clients.s3, bucket), prefix


def _load(store: OutputStore, key: str) -> dict[str, Any] | None:
    blob = store.get(key)
    if blob is None:
        return None
    try:
        data = json.loads(blob.data)
    except ValueError:
        LOGGER.warning("not JSON; skipped", extra={"uri": store.uri(key)})
        return None
    return data if isinstance(data, dict) else None


def _records(store: OutputStore, prefix: str) -> Iterator[dict[str, Any]]:
    """Every manifest, then the status of each run that has no manifest (a failure).

    A single run's status is ``status/<run-id>.json``; a fan-out run has one object
    per task under ``status/<run-id>/``, merged by ``_merge_tasks``.
    """
    seen: set[str] = set()
    for key in (o.key for o in store.list_objects(prefix + "manifests/")):
        run_id = key.rsplit("/", 1)[-1].removesuffix(".json")
        record = _load(store, key) if key.endswith(".json") else None
        if record is not None:
            seen.add(run_id)
            yield {"run_id": run_id, "_key": key, **record}
    tasks: dict[str, dict[str, str]] = {}
    for key in (o.key for o in store.list_objects(prefix + "status/")):
        rest = key[len(prefix + "status/") :]
        run_id, _, task = rest.partition("/")
        if not key.endswith(".json") or run_id.removesuffix(".json") in seen:
            continue
        if task:
            tasks.setdefault(run_id, {})[task.removesuffix(".json")] = key
            continue
        record = _load(store, key)
        if record is not None:
            seen.add(run_id.removesuffix(".json"))
            yield {"run_id": run_id.removesuffix(".json"), "_key": key, **record}
    for run_id, keys in tasks.items():
        if run_id not in seen:
            yield _merge_tasks(store, run_id, keys)


def _merge_tasks(store: OutputStore, run_id: str, keys: dict[str, str]) -> dict[str, Any]:
    """One record of a fan-out run from its tasks' status objects: a failed task speaks for it."""
    statuses = {task: _load(store, key) or {} for task, key in sorted(keys.items())}
    failed = [(task, st) for task, st in statuses.items() if st.get("status") == "failed"]
    task, head = failed[0] if failed else next(reversed(statuses.items()))
    record: dict[str, Any] = {**head, "run_id": run_id, "_key": keys[task]}
    if failed:
        record["error"] = f"{task}: {head.get('error', '')}"
    record["tasks"] = {t: st.get("status", "?") for t, st in statuses.items()}
    # Only map tasks know a dataset that was not set: any task's naming of it stands.
    named = [st["dataset"] for st in statuses.values() if st.get("dataset")]
    if named:
        record["dataset"] = named[0]
    return record


def list_runs(
    store: OutputStore, prefix: str, *, dataset: str | None = None
) -> list[dict[str, Any]]:
    """One row per run, newest first (run ids sort by time; so does started_at)."""
    rows = []
    for record in _records(store, prefix):
        config = record.get("config") or {}
        # A manifest names it in its config, a status object at its top level.
        name = config.get("dataset") or record.get("dataset")
        if dataset is not None and name != dataset:
            continue
        counts = record.get("counts") or record
        dropped = counts.get("dropped") or {}
        rows.append(
            {
                "run_id": record["run_id"],
                "status": record.get("status", "?"),
                "dataset": name or "-",
                "started_at": record.get("started_at", ""),
                "rows_in": counts.get("rows_in"),
                "rows_out": counts.get("rows_out"),
                "dropped": sum(v for v in dropped.values() if isinstance(v, int)),
                "outputs": len(record.get("outputs") or []),
                "error": record.get("error", ""),
            }
        )
    rows.sort(key=lambda r: (r["started_at"] or "", r["run_id"]), reverse=True)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Runs as an aligned text table."""
    if not rows:
        return "no runs found"
    head = ("RUN ID", "STATUS", "DATASET", "STARTED", "IN", "OUT", "DROPPED", "OUTPUTS")
    lines = [head]
    lines.extend(
        (
            r["run_id"],
            r["status"],
            r["dataset"],
            r["started_at"] or "-",
            _n(r["rows_in"]),
            _n(r["rows_out"]),
            _n(r["dropped"]),
            str(r["outputs"]),
        )
        for r in rows
    )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def show_run(store: OutputStore, prefix: str, run_id: str) -> dict[str, Any]:
    """The manifest of `run_id`, else its status (object or tasks); else MissingObjectError."""
    for folder in ("manifests/", "status/"):
        record = _load(store, f"{prefix}{folder}{run_id}.json")
        if record is not None:
            return record
    tasks = {
        o.key[len(f"{prefix}status/{run_id}/") :].removesuffix(".json"): o.key
        for o in store.list_objects(f"{prefix}status/{run_id}/")
        if o.key.endswith(".json")
    }
    if tasks:
        return _merge_tasks(store, run_id, tasks)
    raise MissingObjectError(
        f"{store.uri(f'{prefix}manifests/{run_id}.json')} (and no status object)"
    )


def format_run(record: dict[str, Any]) -> str:
    """A manifest (or status object) for people: the facts first, one per line."""
    counts = record.get("counts") or record
    dropped = ", ".join(f"{k} {v:,}" for k, v in (counts.get("dropped") or {}).items()) or "none"
    lines = [
        f"run       {record.get('run_id')}",
        f"status    {record.get('status')}"
        + (f" (exit {record['exit_code']})" if record.get("exit_code") else ""),
    ]
    if record.get("error"):
        lines.append(f"error     {record['error']}")
    lines.extend(
        f"task      {name}: {state}" for name, state in (record.get("tasks") or {}).items()
    )
    lines.extend(
        f"{name.replace('_at', ''):<9} {record[name]}"
        for name in ("mode", "started_at", "finished_at")
        if record.get(name)
    )
    rows = f"in {_n(counts.get('rows_in'))} -> out {_n(counts.get('rows_out'))}"
    lines.append(f"rows      {rows}; dropped: {dropped}")
    lines.extend(f"metric    {k} = {v}" for k, v in (counts.get("metrics") or {}).items())
    lines.extend(
        f"output    {out['uri'] if isinstance(out, dict) else out}"
        for out in record.get("outputs") or []
    )
    timings = record.get("timings") or {}
    if timings:
        lines.append(
            "timings   " + ", ".join(f"{k.removesuffix('_s')} {v} s" for k, v in timings.items())
        )
    versions = record.get("versions") or {}
    if versions:
        lines.append("versions  " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return "\n".join(lines)


def current_manifest(store: OutputStore, prefix: str, dataset: str) -> str:
    """The manifest key of `dataset`'s current output: the pointer, else the newest manifest."""
    pointer = _load(store, f"{prefix}current/{dataset}.json")
    if pointer is not None and pointer.get("manifest"):
        return str(pointer["manifest"])
    for row in list_runs(store, prefix, dataset=dataset):
        if row["status"] == "succeeded" and row["outputs"]:
            return f"{prefix}manifests/{row['run_id']}.json"
    raise MissingObjectError(
        f"no published output of dataset {dataset!r} under {store.uri(prefix)}"
    )


def download_run(
    store: OutputStore, manifest_key: str, to_dir: Path, *, with_manifest: bool = True
) -> list[Path]:
    """Copy a run's outputs (and its manifest) into `to_dir`, each checked against its SHA-256."""
    from dsjob.s3store import S3Store  # noqa: PLC0415
    from dsjob.storage import sha256_file  # noqa: PLC0415

    manifest = _load(store, manifest_key)
    if manifest is None:
        raise MissingObjectError(store.uri(manifest_key))
    written: list[Path] = []
    for out in manifest.get("outputs") or []:
        dest = to_dir / out["key"].rsplit("/", 1)[-1]
        if isinstance(store, S3Store):
            store._call(  # noqa: SLF001 - the store's own error translation
                f"downloading {out['uri']}",
                out["key"],
                store._s3.download_file,  # noqa: SLF001
                Bucket=store.bucket,
                Key=out["key"],
                Filename=str(dest),
            )
        else:
            shutil.copyfile(out["uri"], dest)
        if out.get("sha256") and sha256_file(dest) != out["sha256"]:
            dest.unlink()
            raise TransientError(
                f"{out['uri']}: downloaded bytes do not match the manifest's SHA-256"
            )
        written.append(dest)
    if with_manifest:
        dest = to_dir / manifest_key.rsplit("/", 1)[-1]
        dest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        written.append(dest)
    return written
