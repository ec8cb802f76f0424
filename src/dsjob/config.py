"""Resolve the job's configuration: CLI flag > DSJOB_* env > SSM parameter > default.

SSM is read with one paginated GetParametersByPath under the prefix (default
``/ds/preprocessing``). Pure local mode (``--input`` a local path and
``--output-dir`` set) reads no SSM at all. Validation collects every problem and
raises them together in one ``ConfigError``. The parameters themselves are in
:mod:`dsjob.params`, the resolved result in :mod:`dsjob.jobconfig`; both are
re-exported here, the module the rest of dsjob imports.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dsjob import validate
from dsjob.aws import region_name
from dsjob.errors import ConfigError
from dsjob.jobconfig import JobConfig, Location, S3Location, redact
from dsjob.params import (
    BAD_ROW_POLICIES,
    DEFAULT_PREFIX,
    OTHER_ENV_NAMES,
    OTHER_ENV_PREFIXES,
    OUTPUT_FORMATS,
    PARAM_NAMES,
    PARAMS,
    PHASES,
    SSM_NAMES,
    Param,
    env_name,
    unknown_env_names,
    unknown_parameters,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from mypy_boto3_ssm import SSMClient

__all__ = [
    "BAD_ROW_POLICIES",
    "DEFAULT_PREFIX",
    "OTHER_ENV_NAMES",
    "OTHER_ENV_PREFIXES",
    "OUTPUT_FORMATS",
    "PARAMS",
    "PARAM_NAMES",
    "PHASES",
    "SSM_NAMES",
    "JobConfig",
    "Location",
    "Param",
    "S3Location",
    "env_name",
    "is_pure_local",
    "new_run_id",
    "read_parameters",
    "redact",
    "resolve",
    "unknown_env_names",
]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
LOGGER = logging.getLogger(__name__)


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
    problems = unknown_parameters(ssm_values, prefix)
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
    # `raw` holds every parameter that has a default (resolve fills it from PARAMS),
    # so defaults are read as raw[name] here and never restated.
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
    elif raw["phase"].lower() in ("reduce", "commit"):
        # A fan-out's reduce and commit read the run's work files, not an input object.
        inp = S3Location(raw.get("input-bucket", ""), raw.get("input-key", ""))
    else:
        missing.extend(n for n in ("input-bucket", "input-key") if n not in raw)
        if "input-bucket" in raw and "input-key" in raw:
            inp = S3Location(raw["input-bucket"], raw["input-key"])

    output_prefix = validate.output_prefix(raw["output-prefix"], problems)
    out: S3Location | Path | None = None
    if "output-dir" in raw:
        out = Path(raw["output-dir"]).expanduser()
    elif "output-bucket" in raw:
        out = S3Location(raw["output-bucket"], output_prefix)
    else:
        missing.append("output-bucket")

    if not local_mode and "artifact-bucket" not in raw:
        missing.append("artifact-bucket")
    model, script, package, transform = (
        artifact(n) for n in ("model", "script", "package", "transform")
    )
    if script is not None and transform is not None:
        # script.py replaces the built-in step, the only place transform.sql runs: it would
        # be fetched and listed in the manifest as an input, yet never run.
        problems.append(
            "transform and script exclude each other: transform.sql runs in the built-in "
            "step, which script.py replaces (unset transform-key or script-key)"
        )

    fmt = raw["output-format"].lower()
    if fmt not in OUTPUT_FORMATS:
        problems.append(f"output-format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    formats = ("parquet", "csv") if fmt == "both" else (fmt,)
    keep = _int(raw, "keep-outputs", problems, minimum=0)
    threads = (
        validate.threads(_int(raw, "threads", problems, minimum=1)) if "threads" in raw else None
    )
    timeout = validate.seconds("script-timeout", raw["script-timeout"], problems, default=3600.0)
    memory = validate.memory_limit(raw["memory-limit"], problems) if "memory-limit" in raw else None
    if "dataset" in raw:
        validate.dataset(raw["dataset"], problems)
    policy = raw["on-bad-rows"].lower()
    if policy not in BAD_ROW_POLICIES:
        problems.append(f"on-bad-rows must be fail or skip, got {policy!r}")
    phase = raw["phase"].lower()
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
        id_column=raw["id-column"],
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
    value = raw[name]
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
