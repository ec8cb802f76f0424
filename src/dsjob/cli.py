"""The command line: the only place that prints, and exits with an error's code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsjob import logs, stop
from dsjob.config import PARAMS
from dsjob.errors import (
    ConfigError,
    DsjobError,
    ExitCode,
    InterruptedRunError,
    TerminatedError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from dsjob.config import JobConfig
    from dsjob.health import Check
    from dsjob.job import RunSummary

LOGGER = logging.getLogger("dsjob")

EXIT_CODES_HELP = """exit codes:
  0    success (also: this run id was already published)
  1    internal error (a bug: please report it with the log)
  2    usage or configuration error (missing/invalid parameters, access denied)
  3    input missing or invalid (names the bucket and key, or the line)
  4    custom script failed or timed out
  5    transient AWS failure (throttling, connection): the only one worth retrying
  143  stopped by SIGTERM before finishing; nothing was published
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsjob",
        description="Run and rehearse the containerized data-processing job.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the job once (the prod image's entrypoint)",
        description="Fetch -> process -> publish. Values: flag > DSJOB_<NAME> env > SSM > default.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--param-prefix", help="SSM parameter prefix (default /ds/preprocessing)")
    for param in PARAMS:
        run.add_argument(f"--{param.name}", dest=param.name, help=param.help)
    _log_flags(run)

    health = sub.add_parser("health", help="image health-check: imports, lock drift, tmp dir")
    health.add_argument("--aws", action="store_true", help="also check STS and SSM reachability")
    health.add_argument("--lock", type=Path, help="lock file to compare (default $DSJOB_LOCK_FILE)")
    health.add_argument("--param-prefix", help="SSM prefix probed by --aws")

    versions = sub.add_parser("versions", help="installed data-stack versions vs the lock")
    versions.add_argument(
        "--lock", type=Path, help="lock file to compare (default $DSJOB_LOCK_FILE)"
    )

    pack = sub.add_parser(
        "pack", help="build a reproducible package.tar.gz and upload it with script.py"
    )
    pack.add_argument("directory", type=Path, help="directory holding script.py and/or package/")
    pack.add_argument("--bucket", help="artifact bucket (default: SSM artifact-bucket)")
    pack.add_argument("--prefix", default="", help="key prefix in the artifact bucket")
    pack.add_argument("--out", type=Path, help="also keep package.tar.gz here")
    pack.add_argument("--no-upload", action="store_true", help="build only")
    pack.add_argument("--param-prefix", help="SSM parameter prefix (default /ds/preprocessing)")
    _log_flags(pack)

    local = sub.add_parser("local", help="the embedded AWS emulator (moto server on loopback)")
    lsub = local.add_subparsers(dest="local_command", required=True, metavar="ACTION")
    for name, text in (
        ("run", "start the emulator, seed it, run the job once, print the summary"),
        ("serve", "start and seed the emulator, print the export line, keep it up"),
        ("seed", "seed an emulator that is already running (AWS_ENDPOINT_URL)"),
    ):
        action = lsub.add_parser(name, help=text, description=text)
        action.add_argument("--rows", type=int, default=1228, help="sample rows (default 1228)")
        action.add_argument("--seed", type=int, default=7, help="random seed of the sample data")
        action.add_argument(
            "--with-script",
            nargs="?",
            const="examples",
            metavar="DIR",
            help="also upload DIR/script.py and DIR/package (default DIR: examples)",
        )
        if name != "seed":
            action.add_argument("--port", type=int, default=0, help="port (default: a free one)")
            action.add_argument("--host", default="127.0.0.1", help="address (default loopback)")
        _log_flags(action)
    return parser


def _log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        default=os.environ.get("DSJOB_LOG_FORMAT", "auto"),
        help="JSON lines off a TTY, text on one (auto)",
    )


def _version() -> str:
    from dsjob.job import version  # noqa: PLC0415

    return version()


def main(argv: Sequence[str] | None = None) -> int:  # noqa: C901, PLR0911 - one return per command
    """Entry point of the `dsjob` console script."""
    args = _parser().parse_args(argv)
    try:  # argparse checks --log-format's choices, but not a default from DSJOB_LOG_FORMAT
        json_lines = logs.json_choice(getattr(args, "log_format", "auto"))
    except ConfigError as exc:
        _fail(exc, exc.exit_code, run_id=None)
        return int(exc.exit_code)
    use_json = logs.configure(verbose=getattr(args, "verbose", False), json_lines=json_lines)
    try:
        if args.command == "run":
            # ECS stops a task with SIGTERM, then SIGKILL 30 s later.
            stop.install()
            return _cmd_run(args, progress=not use_json)
        if args.command in ("health", "versions"):
            from dsjob import health  # noqa: PLC0415

            if args.command == "health":
                return _cmd_health(
                    health.checks(
                        health.lock_path(args.lock), aws=args.aws, prefix=args.param_prefix
                    )
                )
            for name, have, locked in health.versions(args.lock):
                drift = "  <- differs from the lock" if locked not in ("-", have) else ""
                print(f"{name:<14} {have:<12} {locked:<12}{drift}")
            return 0
        if args.command == "pack":
            return _cmd_pack(args)
        from dsjob import local  # noqa: PLC0415

        return local.main(args)
    except DsjobError as exc:
        _fail(exc, exc.exit_code, run_id=getattr(args, "run_id_resolved", None))
        if isinstance(exc, (TerminatedError, InterruptedRunError)):
            # A daemon worker may still be inside DuckDB; skip interpreter teardown.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(exc.exit_code))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _fail(TerminatedError("interrupted"), 130, run_id=None)
        return 130
    except Exception as exc:
        LOGGER.exception("internal error")
        _fail(exc, ExitCode.INTERNAL, run_id=None)
        return int(ExitCode.INTERNAL)


def _fail(exc: BaseException, code: int, *, run_id: str | None) -> None:
    message = str(exc) or type(exc).__name__
    if code == ExitCode.INTERNAL and not isinstance(exc, DsjobError):
        message = f"internal error: {type(exc).__name__}: {message}"
    print(f"Error: {message}", file=sys.stderr, flush=True)
    status: dict[str, Any] = {"status": "failed", "exit_code": int(code), "error": message}
    if run_id:
        status["run_id"] = run_id
    print(json.dumps(status), flush=True)


def _cmd_health(results: list[Check]) -> int:
    """One line per check; 0 when all pass, else 1 with the failing checks named."""
    for check in results:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    failed = [c.name for c in results if not c.ok]
    if failed:
        print(f"Error: unhealthy: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _cmd_run(args: argparse.Namespace, *, progress: bool) -> int:
    flags = {p.name: getattr(args, p.name, None) for p in PARAMS}
    flags["param-prefix"] = args.param_prefix
    summary = run_from_flags(
        flags, progress=progress, on_config=lambda c: setattr(args, "run_id_resolved", c.run_id)
    )
    print_summary(summary)
    return 0


def run_from_flags(
    flags: dict[str, str | None],
    *,
    progress: bool,
    on_config: Callable[[JobConfig], None] | None = None,
) -> RunSummary:
    """Resolve the configuration (reading SSM unless purely local) and run the job once."""
    from dsjob import config, job  # noqa: PLC0415

    clients = None
    reader = None
    if not config.is_pure_local(flags, os.environ):
        from dsjob.aws import Clients, aws_errors, translate  # noqa: PLC0415

        clients = Clients()

        def reader(prefix: str) -> tuple[dict[str, str], frozenset[str]]:
            try:
                return config.read_parameters(clients.ssm, prefix)
            except aws_errors() as exc:
                raise translate(exc, f"reading SSM parameters under {prefix}") from exc

    cfg = config.resolve(flags, os.environ, reader)
    if on_config is not None:
        on_config(cfg)
    LOGGER.info("config resolved", extra={"config": cfg.redacted()})
    return job.run(cfg, clients, progress=progress)


def print_summary(summary: RunSummary) -> None:
    """The human summary on stderr, then the one-line JSON status on stdout (last)."""
    head = f"dsjob run {summary.run_id}: {summary.status}"
    lines = [f"{head} in {summary.duration_s:.2f} s ({summary.mode})"]
    dropped = ", ".join(f"{k} {v:,}" for k, v in summary.dropped.items() if v) or "none"
    rows_in = "?" if summary.rows_in is None else f"{summary.rows_in:,}"
    rows_out = "?" if summary.rows_out is None else f"{summary.rows_out:,}"
    lines.append(f"  rows     in {rows_in} -> out {rows_out}; dropped: {dropped}")
    for obj in summary.outputs:
        rows = "" if obj.records is None else f", {obj.records:,} rows"
        lines.append(f"  output   {obj.uri} ({_size(obj.size)}{rows})")
    lines.append(f"  manifest {summary.manifest_uri}")
    print("\n".join(lines), file=sys.stderr, flush=True)
    status = {
        "status": summary.status,
        "exit_code": 0,
        "run_id": summary.run_id,
        "rows_in": summary.rows_in,
        "rows_out": summary.rows_out,
        "dropped": summary.dropped,
        "outputs": [o.uri for o in summary.outputs],
        "manifest": summary.manifest_uri,
        "duration_s": summary.duration_s,
    }
    print(json.dumps(status), flush=True)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":  # noqa: PLR2004 - binary units
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - unreachable


def _cmd_pack(args: argparse.Namespace) -> int:
    """Build package.tar.gz from DIR/package (or DIR), upload it with DIR/script.py."""
    from dsjob import pack  # noqa: PLC0415

    directory: Path = args.directory
    package_dir = directory / "package" if (directory / "package").is_dir() else directory
    script = directory / "script.py"
    result = pack.pack(package_dir, script if script.is_file() else None, out_dir=args.out)
    for name, (path, digest) in result.uploads().items():
        print(f"built    {name}  sha256 {digest}  ({path})")
    if args.no_upload:
        return 0
    from dsjob.aws import Clients  # noqa: PLC0415

    clients = Clients()
    bucket = args.bucket
    if not bucket:
        from dsjob import config  # noqa: PLC0415

        prefix = args.param_prefix or os.environ.get("DSJOB_PARAM_PREFIX") or config.DEFAULT_PREFIX
        bucket = config.read_parameters(clients.ssm, prefix)[0].get("artifact-bucket")
        if not bucket:
            raise ConfigError(f"no --bucket and no {prefix}/artifact-bucket parameter")
    for key, digest in pack.upload_pack(result, clients.s3, bucket, args.prefix).items():
        print(f"uploaded s3://{bucket}/{key}  sha256 {digest}")
    return 0
