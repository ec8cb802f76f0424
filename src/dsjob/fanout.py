"""The fan-out: map -> reduce -> commit over many input objects, equal to one run over all of them.

* **map** (``phase=map``, one task per input object): clean the object exactly as
  the built-in step does and hash-partition its rows into P files under
  ``<prefix>_work/<run-id>/part=<k>/``; its counts go into a record beside them
  (:mod:`dsjob.workarea`). The typing rule that makes the result equal to a
  single run is in :mod:`dsjob.shuffle`.
* **reduce** (``phase=reduce``, one task per partition): exact dedup of one
  partition into one part, ``<prefix><dataset>_<stamp>_<run-id>/part-<k>.parquet``
  (``<stamp>``: when the run's first map task started, so names sort by time).
* **commit** (``phase=commit``, one task): verify every part, write the run
  manifest listing all parts with the summed counts, then the current pointer,
  then prune older runs of the dataset and delete the work files.

Every phase is idempotent for a run id: a task that already left its record
reports it again; once the manifest exists, every phase reports
"already-published". The dataset is the ``dataset`` parameter when it is set,
else the name of the folder holding the input objects (``raw/members/x.csv`` ->
``members``). A custom script or transform.sql sees one whole input, so neither
can run fanned out.

Modules: this one (entry points), :mod:`dsjob.fanout_tasks` (map, reduce),
:mod:`dsjob.fanout_commit`, :mod:`dsjob.shuffle` (the DuckDB side and the
typing rule), :mod:`dsjob.workarea` (the S3 work files).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from dsjob import fanout_commit, fanout_tasks, stop
from dsjob.config import S3Location
from dsjob.dataobjects import not_data
from dsjob.errors import ConfigError, InputError
from dsjob.workarea import WorkArea

if TYPE_CHECKING:
    from dsjob.aws import Clients
    from dsjob.config import JobConfig
    from dsjob.job import RunSummary

LOGGER = logging.getLogger(__name__)


def run_phase(cfg: JobConfig, clients: Clients | None) -> RunSummary:
    """Run the phase `cfg.phase` names (map, reduce or commit) for `cfg.run_id`."""
    t0 = time.perf_counter()
    work = _work_area(cfg, clients)
    published = fanout_commit.already_committed(work, cfg, t0)
    if published is not None:
        return published
    phase = {
        "map": fanout_tasks.run_map,
        "reduce": fanout_tasks.run_reduce,
        "commit": fanout_commit.run_commit,
    }[cfg.phase]
    return phase(cfg, work, t0)


def _work_area(cfg: JobConfig, clients: Clients | None) -> WorkArea:
    """The run's S3 work area; refuses what cannot fan out before any work starts."""
    problems = []
    if not isinstance(cfg.output, S3Location) or clients is None:
        problems.append("the fan-out publishes to S3 only: set output-bucket, not output-dir")
    if cfg.script is not None or cfg.transform is not None:
        problems.append(
            "script-key and transform-key see one whole input and cannot run fanned out; "
            "use phase single for them"
        )
    if problems or clients is None or not isinstance(cfg.output, S3Location):
        raise ConfigError(f"phase {cfg.phase}: " + "; ".join(problems))
    return WorkArea(clients.s3, cfg.output.bucket, cfg.output.key, cfg.run_id)


def data_objects(clients: Clients, prefix: S3Location) -> list[str]:
    """Keys of the data objects under `prefix`: size above 0, no folder markers or hidden names."""
    from dsjob.aws import aws_errors, translate  # noqa: PLC0415

    keys: list[str] = []
    skipped = {"folder marker": 0, "hidden name": 0, "zero-size object": 0}
    try:
        pages = clients.s3.get_paginator("list_objects_v2").paginate(
            Bucket=prefix.bucket, Prefix=prefix.key
        )
        for page in pages:
            for obj in page.get("Contents", []):
                kind = not_data(obj["Key"], obj["Size"])
                if kind:
                    skipped[kind] += 1
                else:
                    keys.append(obj["Key"])
    except aws_errors() as exc:
        raise translate(exc, f"listing {prefix}", bucket=prefix.bucket) from exc
    if not keys:
        # The workflow fails the same prefix as Dsjob.EmptyInput (its data-object check).
        seen = ", ".join(f"{n} {kind}{'s' * (n != 1)}" for kind, n in skipped.items() if n)
        msg = f"no data objects under {prefix}{f' (skipped: {seen})' if seen else ''}"
        raise InputError(msg + ": nothing to fan out")
    return sorted(keys)


def run_all(cfg: JobConfig, clients: Clients, prefix: S3Location) -> RunSummary:
    """Map every data object under `prefix`, reduce every partition, commit: all in-process.

    Args:
        cfg: the resolved configuration (phase and input are replaced per task).
        clients: AWS clients (the emulator's, for `dsjob local`).
        prefix: the input objects' bucket and key prefix.
    """
    t0 = time.perf_counter()
    keys = data_objects(clients, prefix)
    dataset = fanout_tasks.dataset_of(replace(cfg, input=S3Location(prefix.bucket, keys[0])))
    base = replace(cfg, dataset=dataset, sources={**cfg.sources, "dataset": "flag"})
    for key in keys:
        stop.checkpoint("between map tasks")
        run_phase(replace(base, phase="map", input=S3Location(prefix.bucket, key)), clients)
    for k in range(cfg.partitions):
        stop.checkpoint("between reduce tasks")
        run_phase(replace(base, phase="reduce", partition=k), clients)
    stop.checkpoint("before the commit")
    done = run_phase(replace(base, phase="commit", partition=None), clients)
    # The whole fan-out's time, not the commit task's.
    return replace(done, duration_s=round(time.perf_counter() - t0, 3))
