"""The command line: the only place that prints, and exits with an error's code.

click parses; the DSJOB_* mapping and its precedence (flag > env > SSM > default)
stay in `dsjob.config`, so options here never read the environment themselves.
Every failure, a usage error included, ends with the one-line JSON status on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dsjob import stop
from dsjob.commands import configure_logging, local, log_options, outputs, runs
from dsjob.config import BAD_ROW_POLICIES, OUTPUT_FORMATS, PARAMS, PHASES, env_name
from dsjob.errors import (
    ConfigError,
    DsjobError,
    ExitCode,
    InterruptedRunError,
    TerminatedError,
)
from dsjob.fanout_local import local_fanout

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

LOGGER = logging.getLogger("dsjob")

EXIT_CODES_HELP = """\b
Exit codes:
  0    success (also: this run id was already published)
  1    internal error (a bug: please report it with the log)
  2    usage or configuration error (missing/invalid parameters, access denied)
  3    input missing or invalid (names the bucket and key, or the line)
  4    custom script failed or timed out
  5    transient AWS failure (throttling, connection): the only one worth retrying
  6    out of memory: raise memory-limit or the task's memory
  130  interrupted (Ctrl-C); nothing was published
  143  stopped by SIGTERM before finishing; nothing was published

\b
Shell completion: eval "$(_DSJOB_COMPLETE=bash_source dsjob)"  (zsh_source, fish_source)
"""
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_CHOICES = {"output-format": OUTPUT_FORMATS, "on-bad-rows": BAD_ROW_POLICIES, "phase": PHASES}
_PATHS = frozenset({"input", "model", "script", "package", "transform", "output-dir", "work-root"})
# The run id once the configuration resolved, for the failure status line.
_RUN: dict[str, str] = {}


def _complete(choices: Sequence[str]) -> Callable[..., list[str]]:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
        del ctx, param
        return [c for c in choices if c.startswith(incomplete)]

    return complete


def _param_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One `--<name>` per config.PARAMS entry; its help names the DSJOB_* variable."""
    for param in reversed(PARAMS):
        where = f"env {env_name(param.name)}" + (", SSM" if param.ssm else "")
        default = f"; default {param.default}" if param.default else ""
        func = click.option(
            f"--{param.name}",
            param.name.replace("-", "_"),
            default=None,
            type=click.Path() if param.name in _PATHS else None,
            shell_complete=_complete(_CHOICES[param.name]) if param.name in _CHOICES else None,
            help=f"{param.help} [{where}{default}]",
        )(func)
    return func


@click.group(context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="dsjob", prog_name="dsjob", message="%(prog)s %(version)s")
def cli() -> None:
    """Run and rehearse the containerized data-processing job."""


for _group in (local, runs, outputs):
    cli.add_command(_group)
local.add_command(local_fanout)


@cli.command(epilog=EXIT_CODES_HELP)
@_param_options
@click.option(
    "--param-prefix",
    help="SSM parameter prefix [env DSJOB_PARAM_PREFIX; default /ds/preprocessing]",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="print the resolved config and what would be written; touch nothing",
)
@log_options
def run(
    *,
    param_prefix: str | None,
    dry_run: bool,
    verbose: bool,
    log_format: str | None,
    **values: str | None,
) -> int:
    """Run the job once: fetch -> process -> publish (the prod image's entrypoint).

    Each value comes from the flag, else DSJOB_<NAME>, else SSM under the prefix, else its default.
    """
    use_json = configure_logging(verbose, log_format)
    flags: dict[str, str | None] = {p.name: values[p.name.replace("-", "_")] for p in PARAMS}
    flags["param-prefix"] = param_prefix
    from dsjob import runner  # noqa: PLC0415 - keeps `dsjob --help` light

    if dry_run:
        return runner.dry_run(flags)
    # Flag-based handlers: SIGTERM (ECS stop) and SIGINT (Ctrl-C) raise at the job's
    # safe points, never inside DuckDB or boto3.
    stop.install()
    summary = runner.run_from_flags(
        flags, progress=not use_json, on_config=lambda c: _RUN.update(run_id=c.run_id)
    )
    runner.print_summary(summary)
    return 0


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--aws", is_flag=True, help="also check STS and SSM reachability")
@click.option(
    "--lock", type=click.Path(path_type=Path), help="lock file to compare [env DSJOB_LOCK_FILE]"
)
@click.option("--param-prefix", help="SSM prefix probed by --aws")
def health(*, aws: bool, lock: Path | None, param_prefix: str | None) -> int:
    """Image health-check: imports, lock drift, tmp dir."""
    from dsjob import health as checks  # noqa: PLC0415

    results = checks.checks(checks.lock_path(lock), aws=aws, prefix=param_prefix)
    for check in results:
        click.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    failed = [c.name for c in results if not c.ok]
    if failed:
        click.echo(f"Error: unhealthy: {', '.join(failed)}", err=True)
        return 1
    return 0


@cli.command()
@click.option(
    "--lock", type=click.Path(path_type=Path), help="lock file to compare [env DSJOB_LOCK_FILE]"
)
def versions(*, lock: Path | None) -> int:
    """Installed data-stack versions vs the lock."""
    from dsjob import health as checks  # noqa: PLC0415

    for name, have, locked in checks.versions(lock):
        drift = "  <- differs from the lock" if locked not in ("-", have) else ""
        click.echo(f"{name:<14} {have:<12} {locked:<12}{drift}")
    return 0


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--bucket", help="artifact bucket (default: SSM artifact-bucket)")
@click.option("--prefix", default="", help="key prefix in the artifact bucket")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="also keep package.tar.gz here"
)
@click.option("--no-upload", is_flag=True, help="build only")
@click.option("--param-prefix", help="SSM parameter prefix [env DSJOB_PARAM_PREFIX]")
@log_options
def pack(
    *,
    directory: Path,
    bucket: str | None,
    prefix: str,
    out: Path | None,
    no_upload: bool,
    param_prefix: str | None,
    verbose: bool,
    log_format: str | None,
) -> int:
    """Build a reproducible package.tar.gz from DIRECTORY and upload it with its script.py.

    The package is DIRECTORY/package, else DIRECTORY's one Python package (a
    subdirectory with __init__.py), else DIRECTORY itself.
    """
    configure_logging(verbose, log_format)
    from dsjob import pack as packing  # noqa: PLC0415

    package_dir = packing.find_package_dir(directory) or directory
    script = directory / "script.py"
    result = packing.pack(package_dir, script if script.is_file() else None, out_dir=out)
    for name, (path, digest) in result.uploads().items():
        click.echo(f"built    {name}  sha256 {digest}  ({path})")
    if no_upload:
        return 0
    from dsjob.aws import Clients  # noqa: PLC0415

    clients = Clients()
    if not bucket:
        from dsjob import config  # noqa: PLC0415

        ssm_prefix = param_prefix or os.environ.get("DSJOB_PARAM_PREFIX") or config.DEFAULT_PREFIX
        bucket = config.read_parameters(clients.ssm, ssm_prefix)[0].get("artifact-bucket")
        if not bucket:
            raise ConfigError(f"no --bucket and no {ssm_prefix}/artifact-bucket parameter")
    for key, digest in packing.upload_pack(result, clients.s3, bucket, prefix).items():
        click.echo(f"uploaded s3://{bucket}/{key}  sha256 {digest}")
    return 0


@cli.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="CSV file to write",
)
@click.option(
    "--rows", type=click.IntRange(min=0), default=1228, show_default=True, help="data rows"
)
@click.option(
    "--seed", type=int, default=7, show_default=True, help="random seed (same seed, same file)"
)
def sample(*, output: Path, rows: int, seed: int) -> int:
    """Write the generated member sample (what `dsjob local` seeds) to a CSV file."""
    from dsjob.sample import write_members_csv  # noqa: PLC0415

    if not output.parent.is_dir():
        raise ConfigError(f"-o {output}: directory {output.parent} does not exist")
    write_members_csv(output, rows, seed=seed)
    click.echo(f"wrote {rows:,} rows to {output}", err=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dsjob` console script: run a command, map errors to exit codes."""
    _RUN.clear()
    try:
        result = cli.main(args=argv, prog_name="dsjob", standalone_mode=False)
    except click.UsageError as exc:
        # "Usage: ..." as click prints it, beside the error
        _status(ConfigError(exc.format_message()), usage=exc.ctx.get_usage() if exc.ctx else "")
        return int(ExitCode.CONFIG)
    except click.ClickException as exc:
        return _fail(DsjobError(exc.format_message()))
    except (click.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort; not in completion
        return _fail(InterruptedRunError("interrupted; stopped without publishing"))
    except DsjobError as exc:
        return _fail(exc)
    except Exception as exc:  # noqa: BLE001 - a bug: reported with its traceback, exit 1
        return _fail(exc)
    return result if isinstance(result, int) else 0


def _fail(exc: BaseException) -> int:
    status = _status(exc)
    code = int(status["exit_code"])
    if isinstance(exc, TerminatedError | InterruptedRunError):
        # A daemon worker may still be inside DuckDB: skip interpreter teardown,
        # which would otherwise wait on (or print from) the native thread.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _status(exc: BaseException, *, usage: str = "") -> dict[str, Any]:
    """Report a failure on stderr in the log's format, then the JSON status on stdout (last).

    With JSON logs (CloudWatch) the report is one error record carrying the exit code
    (and the traceback of a bug), so every stderr line parses; on a terminal it is
    click's `Error: <message>` line.
    """
    from dsjob import logs  # noqa: PLC0415
    from dsjob.status import failure_status  # noqa: PLC0415

    status = failure_status(exc, run_id=_RUN.get("run_id"))
    bug = None if isinstance(exc, DsjobError) else exc
    if logs.ensure_configured():
        fields: dict[str, Any] = {"exit_code": status["exit_code"], **_RUN}
        if usage:
            fields["usage"] = usage
        LOGGER.error(status["error"], exc_info=bug, extra=fields)
    else:
        if bug is not None:
            LOGGER.error("internal error", exc_info=bug)
        if usage:
            click.echo(usage, err=True)
        click.echo(f"Error: {status['error']}", err=True)
    click.echo(json.dumps(status))
    return status
