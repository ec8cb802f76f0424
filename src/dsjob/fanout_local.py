"""`dsjob local fanout`: the whole map -> reduce -> commit against the embedded AWS, no real AWS."""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dsjob.commands import configure_logging, log_options
from dsjob.config import S3Location
from dsjob.errors import ConfigError

if TYPE_CHECKING:
    from dsjob.aws import Clients
    from dsjob.job import RunSummary

LOGGER = logging.getLogger(__name__)

#: Where the seeded fan-out input goes in the emulator's input bucket (dataset "members").
PREFIX_KEY = "raw/fanout/members/"


def seed_prefix(
    clients: Clients, bucket: str, *, rows: int, objects: int, random_seed: int = 7
) -> S3Location:
    """Upload the sample data as `objects` CSV objects that share rows across objects.

    Each object after the first repeats a tenth of the rows of the one before it,
    so only a global dedup finds every duplicate.

    Args:
        clients: AWS clients pointed at the emulator.
        bucket: the input bucket (created by the emulator's seed).
        rows: sample rows in all (before the repeats).
        objects: how many objects to split them into (at least 1).
        random_seed: seed of the sample generator.
    """
    from dsjob.sample import write_members_csv  # noqa: PLC0415 - loads duckdb

    if objects < 1 or rows < objects:
        msg = f"--objects must be between 1 and --rows ({rows}), got {objects}"
        raise ConfigError(msg)
    with tempfile.TemporaryDirectory(prefix="dsjob-fanout-seed-") as tmp:
        sample = Path(tmp) / "members.csv"
        write_members_csv(sample, rows, seed=random_seed)
        header, *data = list(csv.reader(sample.read_text(encoding="utf-8").splitlines()))
    size = -(-len(data) // objects)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    for n, chunk in enumerate(chunks):
        repeats = chunks[n - 1][: len(chunks[n - 1]) // 10] if n else []
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(chunk + repeats)
        clients.s3.put_object(
            Bucket=bucket, Key=f"{PREFIX_KEY}part-{n:04d}.csv", Body=buf.getvalue().encode()
        )
    LOGGER.info("seeded the fan-out input", extra={"objects": len(chunks), "prefix": PREFIX_KEY})
    return S3Location(bucket, PREFIX_KEY)


def run(
    clients: Clients, prefix: S3Location, *, partitions: int, run_id: str | None = None
) -> RunSummary:
    """Resolve the configuration from the emulator's SSM and run every phase in-process.

    Args:
        clients: AWS clients pointed at the emulator.
        prefix: the input objects (see :func:`seed_prefix`).
        partitions: P.
        run_id: the run id (default: a new one).
    """
    from dsjob import config, fanout  # noqa: PLC0415 - keeps `dsjob --help` light

    flags: dict[str, str | None] = {"partitions": str(partitions), "run-id": run_id}
    cfg = config.resolve(flags, os.environ, lambda p: config.read_parameters(clients.ssm, p))
    return fanout.run_all(cfg, clients, prefix)


@click.command("fanout")
@click.option("--rows", type=click.IntRange(min=1), default=1228, show_default=True, help="rows")
@click.option("--seed", type=int, default=7, show_default=True, help="random seed of the sample")
@click.option("--objects", type=click.IntRange(min=1), default=3, show_default=True, help="inputs")
@click.option(
    "--partitions", type=click.IntRange(min=1), default=4, show_default=True, help="partitions P"
)
@click.option("--run-id", help="run id (default: a new one)")
@click.option("--port", type=int, default=0, help="port (default: a free one)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address")
@log_options
def local_fanout(
    *,
    rows: int,
    seed: int,
    objects: int,
    partitions: int,
    run_id: str | None,
    port: int,
    host: str,
    verbose: bool,
    log_format: str | None,
) -> int:
    """Run map -> reduce -> commit over seeded objects that share rows, in the emulator."""
    configure_logging(verbose, log_format)
    from dsjob import emulator, runner  # noqa: PLC0415 - moto loads only here
    from dsjob.aws import Clients  # noqa: PLC0415

    with emulator.start(host, port):
        clients = Clients()
        emulator.seed(clients, rows=rows, random_seed=seed)
        prefix = seed_prefix(
            clients, emulator.INPUT_BUCKET, rows=rows, objects=objects, random_seed=seed
        )
        runner.print_summary(run(clients, prefix, partitions=partitions, run_id=run_id))
    return 0
