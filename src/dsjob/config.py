"""Resolve the job's configuration: CLI flag > DSJOB_* env > SSM parameter > default.

SSM is read with one paginated GetParametersByPath under the prefix (default
``/ds/preprocessing``). Pure local mode (``--input`` a local path and
``--output-dir`` set) reads no SSM at all. Validation collects every problem and
raises them together in one ``ConfigError``: a name under the prefix that is not a
parameter is one of them (a typo would otherwise be ignored), while an unknown
``DSJOB_*`` variable is only a warning, since the environment is shared with other tools.
"""

from __future__ import annotations

import difflib
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsjob import validate
from dsjob.aws import region_name
from dsjob.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from mypy_boto3_ssm import SSMClient

LOGGER = logging.getLogger(__name__)

DEFAULT_PREFIX = "/ds/preprocessing"
OUTPUT_FORMATS = ("parquet", "csv", "both")
PHASES = ("single", "map", "reduce", "commit")
BAD_ROW_POLICIES = ("fail", "skip")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_SECRET_NAME = re.compile(r"secret|password|passwd|token|credential|api[-_]?key", re.IGNORECASE)


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
        "DSJOB_LOCK_FILE",
        "DSJOB_INDEX_URL",
        "DSJOB_PYTHON",
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


def _unknown_parameters(values: Mapping[str, str], prefix: str) -> list[str]:
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


def read_parameters(ssm: SSMClient, prefix: str) -> tuple[dict[str, str], frozenset[str]]:
    """All parameters directly under `prefix`, by short name, with one paginated call.

    Returns:
        The values by short name (`input-bucket`), and the short names of SecureStrings.
    """
    # GetParametersByPath (AWS Systems Manager API Reference) returns at most 10
    # parameters per page with a NextToken; Recursive=False returns only the direct
    # children of the path, so every name seen here is one the job must know.
    # moto 5.2.5 pages the same way and, like AWS, keeps parameters per region.
    values: dict[str, str] = {}
    secure: set[str] = set()
    paginator = ssm.get_paginator("get_parameters_by_path")
    for page in paginator.paginate(Path=prefix, Recursive=False, WithDecryption=True):
        for param in page.get("Parameters", []):
            short = param["Name"][len(prefix) :].lstrip("/")
            values[short] = param["Value"]
            if param.get("Type") == "SecureString":
                secure.add(short)
    return values, frozenset(secure)


def new_run_id() -> str:
    """A sortable, unique run id for runs not started by Step Functions."""
    return time.strftime("run-%Y%m%dT%H%M%SZ-", time.gmtime()) + secrets.token_hex(3)


def _location(name: str, value: str, problems: list[str]) -> Location:
    if value.startswith("s3://"):
        bucket, _, key = value[5:].partition("/")
        if not bucket or not key:
            problems.append(f"{name} must be s3://bucket/key or a local path, got {value!r}")
        else:
            bucket = validate.bucket(name, bucket, problems)
            validate.key(name, key, problems, allow_prefix=name == "input")
        return S3Location(bucket, key)
    return Path(value.removeprefix("file://")).expanduser()


def is_pure_local(flags: Mapping[str, str | None], env: Mapping[str, str]) -> bool:
    """True when input is a local path and output a local dir: no AWS needed at all."""
    merged = {n: flags.get(n) or env.get(env_name(n)) for n in ("input", "output-dir")}
    inp = merged["input"]
    return bool(inp and not inp.startswith("s3://") and merged["output-dir"])


def resolve(
    flags: Mapping[str, str | None],
    env: Mapping[str, str],
    ssm_reader: Callable[[str], tuple[dict[str, str], frozenset[str]]] | None,
) -> JobConfig:
    """Merge the sources by precedence and validate the result.

    Args:
        flags: CLI values by parameter name (None = not given).
        env: the process environment (DSJOB_* is read from it).
        ssm_reader: reads the parameters under a prefix; None in pure local mode.
    """
    prefix = (flags.get("param-prefix") or env.get("DSJOB_PARAM_PREFIX") or DEFAULT_PREFIX).rstrip(
        "/"
    ) or DEFAULT_PREFIX
    ssm_values: dict[str, str] = {}
    secure: frozenset[str] = frozenset()
    local_mode = ssm_reader is None
    for warning in unknown_env_names(env):
        LOGGER.warning(warning)
    if ssm_reader is not None:
        ssm_values, secure = ssm_reader(prefix)
    raw: dict[str, str] = {}
    sources: dict[str, str] = {}
    for param in PARAMS:
        for source, value in (
            ("flag", flags.get(param.name)),
            ("env", env.get(env_name(param.name))),
            ("ssm", ssm_values.get(param.name) if param.ssm else None),
            ("default", param.default),
        ):
            if value is not None and value != "":
                raw[param.name] = value
                sources[param.name] = source
                break
    problems = _unknown_parameters(ssm_values, prefix)
    empty = None if local_mode or ssm_values else f"{prefix} in {region_name(env)}"
    return _build(raw, sources, prefix, secure, problems, local_mode=local_mode, empty=empty)


def _build(  # noqa: C901, PLR0912, PLR0915 - one check per parameter, flat on purpose
    raw: dict[str, str],
    sources: dict[str, str],
    prefix: str,
    secure: frozenset[str],
    problems: list[str],
    *,
    local_mode: bool,
    empty: str | None = None,
) -> JobConfig:
    missing: list[str] = []
    for name in ("input-bucket", "output-bucket", "artifact-bucket"):
        if name in raw:
            raw[name] = validate.bucket(name, raw[name], problems)
    for name in ("input-key", "model-key", "script-key", "package-key", "transform-key"):
        if name in raw:
            validate.key(name, raw[name], problems, allow_prefix=name == "input-key")

    def artifact(name: str) -> Location | None:
        if name in raw:
            return _location(name, raw[name], problems)
        if f"{name}-key" in raw:
            if "artifact-bucket" not in raw:
                missing.append("artifact-bucket")
                return None
            return S3Location(raw["artifact-bucket"], raw[f"{name}-key"])
        return None

    inp: Location | None = None
    if "input" in raw:
        inp = _location("input", raw["input"], problems)
    elif raw.get("phase", "").lower() in ("reduce", "commit"):
        # A fan-out's reduce and commit read the run's work files, not an input object.
        inp = S3Location(raw.get("input-bucket", ""), raw.get("input-key", ""))
    else:
        missing.extend(n for n in ("input-bucket", "input-key") if n not in raw)
        if "input-bucket" in raw and "input-key" in raw:
            inp = S3Location(raw["input-bucket"], raw["input-key"])

    output_prefix = validate.output_prefix(raw.get("output-prefix", ""), problems)
    out: S3Location | Path | None = None
    if "output-dir" in raw:
        out = Path(raw["output-dir"]).expanduser()
    elif "output-bucket" in raw:
        out = S3Location(raw["output-bucket"], output_prefix)
    else:
        missing.append("output-bucket")

    if not local_mode and "artifact-bucket" not in raw and "artifact-bucket" not in missing:
        missing.append("artifact-bucket")
    model, script, package, transform = (
        artifact(n) for n in ("model", "script", "package", "transform")
    )

    fmt = raw.get("output-format", "parquet").lower()
    if fmt not in OUTPUT_FORMATS:
        problems.append(f"output-format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    formats = ("parquet", "csv") if fmt == "both" else (fmt,)
    keep = _int(raw, "keep-outputs", problems, minimum=0)
    threads = (
        validate.threads(_int(raw, "threads", problems, minimum=1)) if "threads" in raw else None
    )
    timeout = validate.seconds(
        "script-timeout", raw.get("script-timeout", "3600"), problems, default=3600.0
    )
    memory = validate.memory_limit(raw["memory-limit"], problems) if "memory-limit" in raw else None
    if "dataset" in raw:
        validate.dataset(raw["dataset"], problems)
    policy = raw.get("on-bad-rows", "fail").lower()
    if policy not in BAD_ROW_POLICIES:
        problems.append(f"on-bad-rows must be fail or skip, got {policy!r}")
    phase = raw.get("phase", "single").lower()
    if phase not in PHASES:
        problems.append(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    partitions = _int(raw, "partitions", problems, minimum=1)
    partition = _int(raw, "partition", problems, minimum=0) if "partition" in raw else None
    if phase == "reduce" and partition is None:
        problems.append("phase reduce needs partition (the 0-based partition to deduplicate)")
    if partition is not None and partition >= partitions:
        problems.append(f"partition must be below partitions ({partitions}), got {partition}")
    run_id = raw.get("run-id") or new_run_id()
    if not _RUN_ID.match(run_id):
        problems.append(f"run-id must be letters, digits and ._:- (max 128), got {run_id!r}")

    if missing:
        names = ", ".join(f"{prefix}/{m}" for m in dict.fromkeys(missing))
        envs = ", ".join(env_name(m) for m in dict.fromkeys(missing))
        if empty:
            # Nothing at all under the prefix: the prefix or the region is wrong, or
            # nobody seeded it; a list of every parameter would hide that.
            needs = ", ".join(dict.fromkeys(missing))
            head = (
                f"No parameters under {empty} (the run needs {needs}): check AWS_REGION and "
                f"--param-prefix, or seed them with `dsjob local seed` (or set {envs}"
            )
        else:
            head = f"missing parameters: {names} (put them in SSM Parameter Store, or set {envs}"
        problems.insert(0, f"{head}; or run locally with --input FILE --output-dir DIR)")
    if problems or inp is None or out is None:
        raise ConfigError("; ".join(problems))

    dataset = raw.get("dataset") or _stem(inp)
    return JobConfig(
        run_id=run_id,
        param_prefix=prefix,
        input=inp,
        output=out,
        model=model,
        script=script,
        package=package,
        transform=transform,
        output_formats=formats,
        keep_outputs=keep,
        dataset=dataset,
        id_column=raw.get("id-column", "id"),
        on_bad_rows=policy,
        script_timeout=timeout,
        memory_limit=memory,
        threads=threads,
        work_root=Path(raw["work-root"]) if "work-root" in raw else None,
        local_mode=local_mode,
        scheduled_time=raw.get("scheduled-time"),
        phase=phase,
        partition=partition,
        partitions=partitions,
        sources=sources,
        secret_names=frozenset(n.replace("-", "_") for n in secure) | secure,
    )


def _int(raw: Mapping[str, str], name: str, problems: list[str], *, minimum: int) -> int:
    value = raw.get(name, str(minimum))
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        problems.append(f"{name} must be an integer >= {minimum}, got {value!r}")
        return minimum
    return number


def _stem(location: Location) -> str:
    name = location.key.rsplit("/", 1)[-1] if isinstance(location, S3Location) else location.name
    for suffix in (".gz", ".zst", ".csv", ".parquet", ".tsv", ".txt"):
        name = name.removesuffix(suffix)
    # The same alphabet validate.dataset asks of an explicit --dataset.
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:128] or "data"
