"""What can be configured: every parameter, its sources, and the names dsjob reads.

A name under the SSM prefix that is not a parameter is an error naming the
nearest one (a typo would otherwise be ignored); an unknown ``DSJOB_*`` variable
is only a warning, since the environment is shared with other tools.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_PREFIX = "/ds/preprocessing"
OUTPUT_FORMATS = ("parquet", "csv", "both")
PHASES = ("single", "map", "reduce", "commit")
BAD_ROW_POLICIES = ("fail", "skip")


@dataclass(frozen=True)
class Param:
    """One configuration key: where it may come from and what it means."""

    name: str
    help: str
    default: str | None = None
    required_remote: bool = False  # required unless running in pure local mode
    ssm: bool = True  # False: flag/env only (per-run values such as the run id)


PARAMS: tuple[Param, ...] = (
    Param("input-bucket", "bucket holding the input data", required_remote=True),
    Param("input-key", "key of the input CSV or Parquet in input-bucket", required_remote=True),
    Param("output-bucket", "bucket the outputs are published to", required_remote=True),
    Param(
        "artifact-bucket", "bucket holding model, script, package, transform", required_remote=True
    ),
    Param("model-key", "key of the model file in artifact-bucket (optional)"),
    Param("script-key", "key of script.py in artifact-bucket (optional)"),
    Param("package-key", "key of package.tar.gz in artifact-bucket (optional)"),
    Param("transform-key", "key of a DuckDB SQL file in artifact-bucket (optional)"),
    Param("output-prefix", "key prefix of the published outputs", default="processed/"),
    Param("output-format", "parquet, csv or both", default="parquet"),
    Param("keep-outputs", "previous outputs of the same dataset to keep", default="0"),
    Param("dataset", "output name stem (default: the input file's stem)"),
    Param("id-column", "rows with a NULL value here are dropped", default="id"),
    Param("on-bad-rows", "fail or skip malformed CSV rows", default="fail"),
    Param("script-timeout", "seconds before script.py is stopped", default="3600"),
    Param("memory-limit", "DuckDB memory limit, e.g. 400MB (default: from the cgroup)"),
    Param("threads", "DuckDB threads (default: CPUs available)"),
    # Per-run values: URIs/paths instead of bucket keys, and the run id.
    Param("input", "input as s3://bucket/key or a local path", ssm=False),
    Param("model", "model as s3://bucket/key or a local path", ssm=False),
    Param("script", "script.py as s3://bucket/key or a local path", ssm=False),
    Param("package", "package.tar.gz as s3://bucket/key or a local path", ssm=False),
    Param("transform", "transform.sql as s3://bucket/key or a local path", ssm=False),
    Param("output-dir", "publish to this local directory instead of S3", ssm=False),
    Param("run-id", "run id (Step Functions passes the execution name)", ssm=False),
    Param("work-root", "where the per-run work dir is created (default: system temp)", ssm=False),
    Param(
        "scheduled-time",
        "the schedule tick that started this run (ISO 8601); the run id derives from it",
        ssm=False,
    ),
    # Fan-out (map -> reduce -> commit over an input prefix); "single" is one ordinary run.
    Param("phase", "single, map, reduce or commit", default="single", ssm=False),
    Param("partition", "the partition a reduce task deduplicates (0-based)", ssm=False),
    Param("partitions", "hash partitions of a fan-out run", default="16"),
)
PARAM_NAMES = frozenset(p.name for p in PARAMS)
SSM_NAMES = frozenset(p.name for p in PARAMS if p.ssm)
# DSJOB_* variables that are not parameters but are read elsewhere in the toolkit:
# the CLI, the emulator's tools, the image build, the test suite's policy switches,
# and the context the job hands a custom script (see context.py). Add a name here
# when a new one is read, or `dsjob run` warns that it looks like a typo.
OTHER_ENV_NAMES = frozenset(
    {
        "DSJOB_PARAM_PREFIX",
        "DSJOB_LOG_FORMAT",
        "DSJOB_KEEP_WORK",
        "DSJOB_LEASE_SECONDS",
        "DSJOB_LOCK_FILE",
        "DSJOB_INDEX_URL",
        "DSJOB_PYTHON",
        "DSJOB_UV",
        "DSJOB_IMAGE_FLAVOUR",
        "DSJOB_CHROMIUM",
        "DSJOB_INPUT_PATH",
        "DSJOB_MODEL_PATH",
        "DSJOB_WORK_DIR",
        "DSJOB_PROCESS_TAG",
        "DSJOB_REPORT_PATH",
        "DSJOB_SBOM_FILE",
        "DSJOB_PROD_LOCK",
        "DSJOB_ROOT",
        # compose.yaml's and the container tests' image and port choices
        "DSJOB_DEV_IMAGE",
        "DSJOB_PROD_IMAGE",
        "DSJOB_EMULATOR_PORT",
    }
)
OTHER_ENV_PREFIXES = ("DSJOB_REQUIRE_",)


def env_name(name: str) -> str:
    """`input-key` -> `DSJOB_INPUT_KEY`."""
    return "DSJOB_" + name.upper().replace("-", "_")


def _did_you_mean(name: str, known: frozenset[str]) -> str:
    nearest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {nearest[0]}?)" if nearest else ""


def unknown_env_names(env: Mapping[str, str]) -> list[str]:
    """One message per DSJOB_* variable that no part of dsjob reads, with the nearest name."""
    known = frozenset(env_name(p.name) for p in PARAMS) | OTHER_ENV_NAMES
    return [
        f"unknown environment variable {name}{_did_you_mean(name, known)}; it is ignored"
        for name in sorted(env)
        if name.startswith("DSJOB_")
        and name not in known
        and not name.startswith(OTHER_ENV_PREFIXES)
    ]


def unknown_parameters(values: Mapping[str, str], prefix: str) -> list[str]:
    """A problem per name under the SSM prefix that is not read from SSM."""
    problems = []
    for name in sorted(values):
        if name in SSM_NAMES:
            continue
        if name in PARAM_NAMES:
            problems.append(
                f"{prefix}/{name} is a per-run value and is not read from SSM: "
                f"pass --{name} or set {env_name(name)}"
            )
        else:
            problems.append(f"unknown parameter {prefix}/{name}{_did_you_mean(name, SSM_NAMES)}")
    return problems
