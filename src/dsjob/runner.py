"""One run from flags to status: resolve, run the job, print the summary, leave a status object.

The CLI, `dsjob local run`, the Lambda handler and the fan-out phases all start
a run through `run_from_flags`, so every entry point prints the same summary and
leaves the same `<prefix>status/<run-id>.json` behind (a fan-out task its own
`<prefix>status/<run-id>/<task>.json`, see :mod:`dsjob.status`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING

from dsjob.status import failure_status, status_key, success_status, task_name, write_status

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from dsjob.config import JobConfig
    from dsjob.job import RunSummary

LOGGER = logging.getLogger("dsjob")


def run_from_flags(
    flags: Mapping[str, str | None],
    *,
    progress: bool,
    on_config: Callable[[JobConfig], None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunSummary:
    """Resolve the configuration (reading SSM unless purely local) and run the job once.

    On S3 outputs, `<prefix>status/<run-id>.json` is written on success and on any
    failure after the configuration resolved (best effort: never changes the outcome).

    Args:
        flags: values by parameter name (None: not given), plus `param-prefix`.
        progress: draw progress bars (TTY text mode only).
        on_config: called with the resolved configuration before any work starts.
        environ: the environment DSJOB_* values come from (default ``os.environ``).
    """
    from dsjob import config, job  # noqa: PLC0415 - keeps `dsjob --help` light

    env = os.environ if environ is None else environ
    clients = None
    reader = None
    if not config.is_pure_local(flags, env):
        from dsjob.aws import Clients, aws_errors, translate  # noqa: PLC0415

        clients = Clients()

        def reader(prefix: str) -> tuple[dict[str, str], frozenset[str]]:
            try:
                return config.read_parameters(clients.ssm, prefix)
            except aws_errors() as exc:
                raise translate(exc, f"reading SSM parameters under {prefix}") from exc

    cfg = config.resolve(flags, env, reader)
    from dsjob.lease import ttl_seconds  # noqa: PLC0415

    ttl_seconds(env)  # a bad DSJOB_LEASE_SECONDS exits 2 now, not after the work
    if on_config is not None:
        on_config(cfg)
    LOGGER.info("config resolved", extra={"config": cfg.redacted()})
    _warn_unlocked_imports(cfg)
    try:
        summary = job.run(cfg, clients, progress=progress)
    except BaseException as exc:
        write_status(cfg, clients, failure_status(exc, run_id=cfg.run_id))
        raise
    write_status(cfg, clients, success_status(summary))
    return summary


def dry_run(flags: Mapping[str, str | None], environ: Mapping[str, str] | None = None) -> int:
    """Print the resolved config, each value's source and the keys a run would write.

    Reads SSM (unless purely local) and nothing else: no fetch, no write, no S3 call.
    """
    from dsjob import config  # noqa: PLC0415

    env = os.environ if environ is None else environ
    ssm_values: dict[str, str] = {}
    reader = None
    if not config.is_pure_local(flags, env):
        from dsjob.aws import Clients, aws_errors, translate  # noqa: PLC0415

        clients = Clients()

        def reader(prefix: str) -> tuple[dict[str, str], frozenset[str]]:
            try:
                values, secure = config.read_parameters(clients.ssm, prefix)
            except aws_errors() as exc:
                raise translate(exc, f"reading SSM parameters under {prefix}") from exc
            ssm_values.update(values)
            return values, secure

    cfg = config.resolve(flags, env, reader)
    defaults = {p.name: p.default for p in config.PARAMS}
    order = [p.name for p in config.PARAMS if p.name in cfg.sources]

    def value(name: str, source: str) -> str | None:
        found = {
            "flag": flags.get(name),
            "env": env.get(config.env_name(name)),
            "ssm": ssm_values.get(name),
        }
        return found.get(source, defaults.get(name))

    values = {n: value(n, cfg.sources[n]) for n in order}
    values = config.redact(values, cfg.secret_names)
    width = max(map(len, values), default=0)
    planned = would_write(cfg)
    from dsjob import logs  # noqa: PLC0415

    if logs.json_mode():  # the status line below carries it all; stderr stays JSON records
        LOGGER.info("dry run: nothing was touched", extra={"run_id": cfg.run_id})
    else:
        head = f"dsjob run --dry-run {cfg.run_id} (prefix {cfg.param_prefix}): nothing was touched"
        lines = [head, *(f"  {n:<{width}}  {values[n]}  ({cfg.sources[n]})" for n in values)]
        lines += [f"  would write {uri}" for uri in planned]
        print("\n".join(lines), file=sys.stderr, flush=True)  # noqa: T201
    status = {
        "status": "dry-run",
        "exit_code": 0,
        "run_id": cfg.run_id,
        "config": {n: {"value": values[n], "source": cfg.sources[n]} for n in values},
        "would_write": planned,
    }
    print(json.dumps(status), flush=True)  # noqa: T201
    return 0


def would_write(cfg: JobConfig) -> list[str]:
    """The outputs (names stamped with the start time), manifest, pointer and status of a run."""
    from dsjob.config import S3Location  # noqa: PLC0415

    if isinstance(cfg.output, S3Location):
        base, prefix = f"s3://{cfg.output.bucket}/", cfg.output.key
    else:
        base, prefix = f"{cfg.output}/", ""
    stamp = "<YYYYMMDD_HHMMSS>"
    if cfg.script is not None:
        outputs = [f"{base}{prefix}<each file script.py writes, as NAME_{stamp}.EXT>"]
    else:
        outputs = [f"{base}{prefix}{cfg.dataset}_{stamp}.{fmt}" for fmt in cfg.output_formats]
    planned = [*outputs, f"{base}{prefix}manifests/{cfg.run_id}.json"]
    planned.append(f"{base}{prefix}current/{cfg.dataset}.json")
    if isinstance(cfg.output, S3Location):
        planned.append(f"{base}{status_key(prefix, cfg.run_id, task_name(cfg))}")
    return planned


def run_in_process(params: Mapping[str, object]) -> RunSummary:
    """`dsjob.run(...)`: flags by keyword (`output_dir=`), unknown names refused with a hint."""
    import difflib  # noqa: PLC0415

    from dsjob.config import PARAM_NAMES  # noqa: PLC0415
    from dsjob.errors import ConfigError  # noqa: PLC0415

    known = PARAM_NAMES | {"param-prefix"}
    flags: dict[str, str | None] = {}
    for name, value in params.items():
        flag = name.replace("_", "-")
        if flag not in known:
            near = difflib.get_close_matches(flag, sorted(known), n=1)
            hint = f" (did you mean {near[0].replace('-', '_')}?)" if near else ""
            raise ConfigError(f"dsjob.run() got an unknown parameter {name!r}{hint}")
        flags[flag] = None if value is None else str(value)
    return run_from_flags(flags, progress=False)


def _warn_unlocked_imports(cfg: JobConfig) -> None:
    """Warn (dev venv) when a local script.py imports what the prod image will not have."""
    from pathlib import Path  # noqa: PLC0415

    if not isinstance(cfg.script, Path) or not cfg.script.is_file():
        return
    from dsjob import parity  # noqa: PLC0415

    parity.warn_unlocked_imports(cfg.script)


def print_summary(summary: RunSummary) -> None:
    """The run's report on stderr, then the one-line JSON status on stdout (last).

    With JSON logs (CloudWatch) the report is one more JSON log record, so every
    stderr line stays parseable by metric filters; on a terminal it is a short
    human table.
    """
    from dsjob import logs  # noqa: PLC0415 - logging set-up is only needed here

    if logs.json_mode():
        LOGGER.info(
            "run summary",
            extra={
                "run_id": summary.run_id,
                "status": summary.status,
                "mode": summary.mode,
                "duration_s": summary.duration_s,
                "rows_in": summary.rows_in,
                "rows_out": summary.rows_out,
                "dropped": summary.dropped,
                "metrics": summary.metrics,
                "outputs": [
                    {"uri": o.uri, "size": o.size, "records": o.records} for o in summary.outputs
                ],
                "manifest": summary.manifest_uri,
            },
        )
    else:
        print(human_summary(summary), file=sys.stderr, flush=True)  # noqa: T201 - the report
    print(json.dumps(success_status(summary)), flush=True)  # noqa: T201


def human_summary(summary: RunSummary) -> str:
    """The terminal report of a finished run: counts, metrics, outputs and manifest."""
    head = f"dsjob run {summary.run_id}: {summary.status}"
    lines = [f"{head} in {summary.duration_s:.2f} s ({summary.mode})"]
    dropped = ", ".join(f"{k} {v:,}" for k, v in summary.dropped.items() if v) or "none"
    rows_in = "?" if summary.rows_in is None else f"{summary.rows_in:,}"
    rows_out = "?" if summary.rows_out is None else f"{summary.rows_out:,}"
    lines.append(f"  rows     in {rows_in} -> out {rows_out}; dropped: {dropped}")
    for name, value in summary.metrics.items():
        lines.append(f"  metric   {name} = {value}")
    for obj in summary.outputs:
        rows = "" if obj.records is None else f", {obj.records:,} rows"
        lines.append(f"  output   {obj.uri} ({human_size(obj.size)}{rows})")
    lines.append(f"  manifest {summary.manifest_uri}")
    return "\n".join(lines)


def human_size(n: int) -> str:
    """1536 -> '1.5 KiB' (bytes stay exact)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":  # noqa: PLR2004 - binary units
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - unreachable
