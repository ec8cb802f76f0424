"""The command groups around the run: `dsjob local ...` (the emulator), `runs`, `outputs`.

They only parse and print; the work lives in `dsjob.emulator`, `dsjob.runner`
and `dsjob.runs`, imported when a command runs so `dsjob --help` stays light.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dsjob import logs
from dsjob.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable


def log_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """`-v/--verbose` and `--log-format` for a command."""
    func = click.option("-v", "--verbose", is_flag=True, help="debug logging")(func)
    return click.option(
        "--log-format",
        type=click.Choice(["auto", "json", "text"]),
        default=None,
        help="JSON lines off a TTY, text on one [env DSJOB_LOG_FORMAT; default auto]",
    )(func)


def configure_logging(verbose: bool, log_format: str | None) -> bool:  # noqa: FBT001
    """Configure logging; returns whether JSON lines were chosen (no progress bars then)."""
    # A misspelt DSJOB_LOG_FORMAT is a configuration error (exit 2), not a silent fallback.
    json_lines = logs.json_choice(log_format or os.environ.get("DSJOB_LOG_FORMAT"))
    return logs.configure(verbose=verbose, json_lines=json_lines)


def _seed_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        (
            click.option(
                "--rows",
                type=click.IntRange(min=0),
                default=1228,
                show_default=True,
                help="sample rows",
            ),
            click.option(
                "--seed",
                type=int,
                default=7,
                show_default=True,
                help="random seed of the sample data",
            ),
            click.option(
                "--with-script",
                is_flag=False,
                flag_value="examples",
                default=None,
                metavar="[DIR]",
                help="also upload DIR/script.py and its package (DIR defaults to examples)",
            ),
        )
    ):
        func = option(func)
    return log_options(func)


def _server_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--port", type=int, default=0, help="port (default: a free one)")(func)
    return click.option("--host", default="127.0.0.1", show_default=True, help="address")(func)


@click.group()
def local() -> None:
    """The embedded AWS emulator (moto server on loopback)."""


@local.command("run")
@_seed_options
@_server_options
@click.option(
    "--mirror",
    type=click.Path(file_okay=False, path_type=Path),
    help="also copy the outputs and the manifest into this local directory",
)
def local_run(
    *,
    rows: int,
    seed: int,
    with_script: str | None,
    verbose: bool,
    log_format: str | None,
    port: int,
    host: str,
    mirror: Path | None,
) -> int:
    """Start the emulator, seed it, run the job once, print the summary."""
    use_json = configure_logging(verbose, log_format)
    from dsjob import emulator, runner  # noqa: PLC0415
    from dsjob import runs as history  # noqa: PLC0415

    with emulator.start(host, port) as aws:
        emulator.seed(
            _clients(),
            rows=rows,
            random_seed=seed,
            script_dir=_dir(with_script),
            progress=not use_json,
        )
        summary = runner.run_from_flags({}, progress=not use_json)
        if mirror is not None:
            mirror.mkdir(parents=True, exist_ok=True)
            store, prefix = history.output_store({}, None)
            key = f"{prefix}manifests/{summary.run_id}.json"
            for path in history.download_run(store, key, mirror):
                _note(f"copied   {path}", "output copied", use_json=use_json, path=str(path))
        else:
            _note(
                f"# the emulator stops now; keep outputs with --mirror DIR ({aws.endpoint_url})",
                "the emulator stops now; keep outputs with --mirror DIR",
                use_json=use_json,
                endpoint=aws.endpoint_url,
            )
        runner.print_summary(summary)
    return 0


def _note(text: str, message: str, *, use_json: bool, **fields: str) -> None:
    """A line for the user: with JSON logs a log record (`message`, `fields`), else `text`."""
    if use_json:
        logging.getLogger("dsjob").info(message, extra=fields)
    else:
        click.echo(text, err=True)


@local.command("serve")
@_seed_options
@_server_options
def local_serve(
    *,
    rows: int,
    seed: int,
    with_script: str | None,
    verbose: bool,
    log_format: str | None,
    port: int,
    host: str,
) -> int:
    """Start and seed the emulator, print the export line, keep it up until Ctrl-C."""
    use_json = configure_logging(verbose, log_format)
    from dsjob import emulator  # noqa: PLC0415

    with emulator.start(host, port) as aws:
        emulator.seed(
            _clients(),
            rows=rows,
            random_seed=seed,
            script_dir=_dir(with_script),
            progress=not use_json,
        )
        click.echo(f"export AWS_ENDPOINT_URL={aws.endpoint_url}")
        creds = " ".join(f"{k}={v}" for k, v in emulator.FAKE_CREDENTIALS.items())
        click.echo(f"export {creds}")
        _note(
            "# embedded AWS is up; Ctrl-C to stop",
            "embedded AWS is up; Ctrl-C to stop",
            use_json=use_json,
            endpoint=aws.endpoint_url,
        )
        emulator.wait_for_signal()
    return 0


@local.command("seed")
@_seed_options
def local_seed(
    *,
    rows: int,
    seed: int,
    with_script: str | None,
    verbose: bool,
    log_format: str | None,
) -> int:
    """Seed an emulator that is already running (AWS_ENDPOINT_URL)."""
    use_json = configure_logging(verbose, log_format)
    from dsjob import emulator  # noqa: PLC0415

    if not os.environ.get("AWS_ENDPOINT_URL"):
        raise ConfigError("dsjob local seed needs AWS_ENDPOINT_URL (see `dsjob local serve`)")
    emulator.seed(
        _clients(), rows=rows, random_seed=seed, script_dir=_dir(with_script), progress=not use_json
    )
    return 0


def _clients() -> Any:  # noqa: ANN401 - dsjob.aws.Clients, imported lazily
    from dsjob.aws import Clients  # noqa: PLC0415

    return Clients()


def _dir(value: str | None) -> Path | None:
    return Path(value) if value else None


def _where(func: Callable[..., Any]) -> Callable[..., Any]:
    """Where the history lives: a local output dir, or the output bucket and prefix."""
    for option in reversed(
        (
            click.option(
                "--output-dir",
                type=click.Path(file_okay=False),
                help="a local output directory [env DSJOB_OUTPUT_DIR]",
            ),
            click.option(
                "--output-bucket", help="the output bucket [env DSJOB_OUTPUT_BUCKET, SSM]"
            ),
            click.option(
                "--output-prefix",
                help="the output prefix [env DSJOB_OUTPUT_PREFIX, SSM; default processed/]",
            ),
            click.option("--param-prefix", help="SSM parameter prefix [env DSJOB_PARAM_PREFIX]"),
        )
    ):
        func = option(func)
    return log_options(func)


def _store(values: dict[str, Any]) -> tuple[Any, str]:
    from dsjob import runs as history  # noqa: PLC0415

    flags = {
        k.replace("_", "-"): values.pop(k)
        for k in ("output_dir", "output_bucket", "output_prefix", "param_prefix")
    }
    configure_logging(values.pop("verbose"), values.pop("log_format"))
    return history.output_store(flags, None)


@click.group()
def runs() -> None:
    """Past runs, from the manifests and status objects under the output prefix."""


@runs.command("ls")
@click.option("--dataset", help="only runs of this dataset")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="newest N")
@_where
def runs_ls(*, dataset: str | None, limit: int, **values: Any) -> int:  # noqa: ANN401
    """List runs, newest first: status, rows in/out/dropped, outputs, duration."""
    from dsjob import runs as history  # noqa: PLC0415

    store, prefix = _store(values)
    rows = history.list_runs(store, prefix, dataset=dataset)[:limit]
    click.echo(history.format_table(rows))
    return 0


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="the manifest (or status object) as JSON")
@_where
def runs_show(*, run_id: str, as_json: bool, **values: Any) -> int:  # noqa: ANN401
    """One run in full: status, counts, outputs, timings, versions."""
    import json  # noqa: PLC0415

    from dsjob import runs as history  # noqa: PLC0415

    store, prefix = _store(values)
    record = history.show_run(store, prefix, run_id)
    click.echo(json.dumps(record, indent=2) if as_json else history.format_run(record))
    return 0


@click.group()
def outputs() -> None:
    """Published outputs."""


@outputs.command("get")
@click.argument("dataset")
@click.option(
    "--to",
    "to_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="directory to download into",
)
@_where
def outputs_get(*, dataset: str, to_dir: Path, **values: Any) -> int:  # noqa: ANN401
    """Download DATASET's current output (checked against the manifest's SHA-256)."""
    from dsjob import runs as history  # noqa: PLC0415

    store, prefix = _store(values)
    to_dir.mkdir(parents=True, exist_ok=True)
    manifest_uri = history.current_manifest(store, prefix, dataset)
    for path in history.download_run(store, manifest_uri, to_dir, with_manifest=False):
        click.echo(str(path))
    return 0
