"""config.resolve, value by value: precedence, the prefix, locations, numbers, messages."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dsjob.config import S3Location, is_pure_local, new_run_id, resolve
from dsjob.errors import ConfigError

pytestmark = pytest.mark.unit

SSM = {
    "input-bucket": "in",
    "input-key": "raw/members.csv",
    "output-bucket": "out",
    "artifact-bucket": "art",
}
PREFIX = "/ds/preprocessing"


def reader(
    values: dict[str, str], secure: frozenset[str] = frozenset(), calls: list[str] | None = None
):
    """An SSM reader answering `values` for any prefix, recording the prefixes asked."""

    def read(prefix: str) -> tuple[dict[str, str], frozenset[str]]:
        if calls is not None:
            calls.append(prefix)
        return dict(values), secure

    return read


def problems(flags: dict[str, str], ssm: dict[str, str] | None = None) -> str:
    """The ConfigError message `resolve` raises for these flags over `ssm` (default: SSM)."""
    with pytest.raises(ConfigError) as info:
        resolve(flags, {}, reader(SSM if ssm is None else ssm))
    return str(info.value)


def problem_list(flags: dict[str, str], ssm: dict[str, str] | None = None) -> list[str]:
    """Each problem of that message on its own (they are joined with '; ')."""
    return problems(flags, ssm).split("; ")


def test_the_flag_prefix_beats_the_env_prefix_and_loses_its_trailing_slash() -> None:
    """--param-prefix beats DSJOB_PARAM_PREFIX; a trailing slash is dropped before SSM is read."""
    calls: list[str] = []
    cfg = resolve({"param-prefix": "/a/"}, {"DSJOB_PARAM_PREFIX": "/b"}, reader(SSM, calls=calls))
    assert calls == ["/a"]
    assert cfg.param_prefix == "/a"


def test_only_slashes_are_trimmed_from_the_prefix() -> None:
    """The prefix loses trailing slashes and nothing else (a name may end in any letter)."""
    calls: list[str] = []
    resolve({"param-prefix": "/jobX//"}, {}, reader(SSM, calls=calls))
    assert calls == ["/jobX"]


def test_a_bare_slash_prefix_falls_back_to_the_default() -> None:
    """A prefix of only slashes reads the default prefix, not the whole parameter store."""
    calls: list[str] = []
    cfg = resolve({}, {"DSJOB_PARAM_PREFIX": "/"}, reader(SSM, calls=calls))
    assert calls == [PREFIX]
    assert cfg.param_prefix == PREFIX


def test_an_empty_value_counts_as_not_given() -> None:
    """An empty flag or variable falls through to the next source instead of blanking it."""
    cfg = resolve({"input-key": ""}, {"DSJOB_INPUT_KEY": "", "DSJOB_ID_COLUMN": "pk"}, reader(SSM))
    assert cfg.input == S3Location("in", "raw/members.csv")
    assert cfg.sources["input-key"] == "ssm"
    assert (cfg.id_column, cfg.sources["id-column"]) == ("pk", "env")
    assert cfg.sources["output-format"] == "default"


def test_a_per_run_name_in_ssm_is_never_used() -> None:
    """A flag-only parameter (run-id) found in SSM is refused, and its value is not taken."""
    message = problems({}, {**SSM, "run-id": "from-ssm"})
    assert f"{PREFIX}/run-id is a per-run value and is not read from SSM" in message
    cfg = resolve({}, {"DSJOB_RUN_ID": "r-env"}, reader(SSM))
    assert (cfg.run_id, cfg.sources["run-id"]) == ("r-env", "env")


def test_defaults_of_a_remote_run() -> None:
    """With only the four buckets and the key, every other setting takes its documented default."""
    cfg = resolve({"run-id": "r1"}, {}, reader(SSM))
    assert cfg.output == S3Location("out", "processed/")
    assert cfg.output_formats == ("parquet",)
    assert cfg.keep_outputs == 0
    assert cfg.script_timeout == 3600.0
    assert (cfg.memory_limit, cfg.threads, cfg.work_root) == (None, None, None)
    assert (cfg.on_bad_rows, cfg.phase, cfg.partition, cfg.partitions) == (
        "fail",
        "single",
        None,
        16,
    )
    assert (cfg.model, cfg.script, cfg.package, cfg.transform) == (None, None, None, None)
    assert (cfg.local_mode, cfg.scheduled_time, cfg.run_id) == (False, None, "r1")
    assert cfg.dataset == "members"


def test_choices_are_case_insensitive_and_numbers_are_read() -> None:
    """Choice values are lower-cased; numbers, the memory limit and the work root are parsed."""
    flags = {
        "output-format": "CSV",
        "on-bad-rows": "Skip",
        "phase": "MAP",
        "keep-outputs": "3",
        "threads": "1",
        "script-timeout": "90",
        "memory-limit": "512MB",
        "partitions": "4",
        "work-root": "/tmp/w",
        "scheduled-time": "2027-01-01T00:00:00Z",
        "dataset": "people",
    }
    cfg = resolve(flags, {}, reader(SSM))
    assert cfg.output_formats == ("csv",)
    assert (cfg.on_bad_rows, cfg.phase, cfg.partitions) == ("skip", "map", 4)
    assert (cfg.keep_outputs, cfg.threads, cfg.script_timeout) == (3, 1, 90.0)
    assert cfg.memory_limit is not None
    assert cfg.memory_limit.upper().startswith("512")
    assert cfg.work_root == Path("/tmp/w")
    assert (cfg.scheduled_time, cfg.dataset) == ("2027-01-01T00:00:00Z", "people")


def test_artifacts_come_from_a_uri_or_from_a_key_in_the_artifact_bucket(tmp_path: Path) -> None:
    """--model takes a URI or a path; model-key/script-key name objects in artifact-bucket."""
    flags = {
        "model": "s3://m/models/a.bin",
        "script": str(tmp_path / "s.py"),
        "package-key": "p.tgz",
    }
    cfg = resolve(flags, {}, reader({**SSM, "model-key": "unused"}))
    assert cfg.model == S3Location("m", "models/a.bin")
    assert cfg.script == tmp_path / "s.py"
    assert cfg.package == S3Location("art", "p.tgz")
    cfg = resolve({"transform-key": "t.sql"}, {}, reader(SSM))
    assert cfg.transform == S3Location("art", "t.sql")
    cfg = resolve({"transform": str(tmp_path / "t.sql")}, {}, reader(SSM))
    assert cfg.transform == tmp_path / "t.sql"


@pytest.mark.parametrize(
    ("flags", "ssm"),
    [
        ({"transform-key": "t.sql"}, {"script-key": "s.py"}),
        ({"script": "s.py"}, {"transform-key": "t.sql"}),
    ],
)
def test_a_transform_with_a_script_is_refused(flags: dict[str, str], ssm: dict[str, str]) -> None:
    """transform.sql runs only in the built-in step that script.py replaces: both is exit 2.

    The message says why and which of the two parameters to unset.
    """
    assert (
        "transform and script exclude each other: transform.sql runs in the built-in step, "
        "which script.py replaces (unset transform-key or script-key)"
    ) in problems(flags, {**SSM, **ssm})


def test_a_key_without_an_artifact_bucket_names_the_bucket(tmp_path: Path) -> None:
    """In local mode a script-key with no artifact-bucket is a missing artifact-bucket."""
    flags = {"input": str(tmp_path / "a.csv"), "output-dir": str(tmp_path), "script-key": "s.py"}
    with pytest.raises(ConfigError) as info:
        resolve(flags, {}, None)
    assert str(info.value).startswith("missing parameters: /ds/preprocessing/artifact-bucket (")


def test_input_and_output_locations(tmp_path: Path) -> None:
    """--input takes an s3:// URI, a file:// URI or ~; --output-dir wins over output-bucket."""
    cfg = resolve({"input": "s3://b/x/y.csv.gz", "output-dir": str(tmp_path)}, {}, reader(SSM))
    assert (cfg.input, cfg.output, cfg.dataset) == (S3Location("b", "x/y.csv.gz"), tmp_path, "y")
    cfg = resolve({"input": f"file://{tmp_path}/d.parquet"}, {}, reader(SSM))
    assert (cfg.input, cfg.dataset) == (tmp_path / "d.parquet", "d")
    cfg = resolve({"input": "~/d.tsv"}, {}, reader(SSM))
    assert cfg.input == Path.home() / "d.tsv"


@pytest.mark.parametrize("uri", ["s3://bucket-only", "s3:///key", "s3://"])
def test_an_incomplete_s3_uri_is_named(uri: str) -> None:
    """An s3:// input without a bucket or a key is refused, quoting the value."""
    message = problems({"input": uri})
    assert f"input must be s3://bucket/key or a local path, got {uri!r}" in message


def test_bad_buckets_and_keys_name_their_parameter() -> None:
    """A bad bucket and a folder key are each named; only input-key may be a prefix."""
    message = problems({"output-bucket": "out/data", "script-key": "dir/"})
    assert "output-bucket must be a bucket name, got 'out/data'" in message
    assert "script-key 'dir/' is not a usable object key" in message
    cfg = resolve({"input-key": "raw/"}, {}, reader(SSM))
    assert cfg.input == S3Location("in", "raw/")
    assert "model 'dir/' is not a usable object key" in problems({"model": "s3://m/dir/"})
    cfg = resolve({"input": "s3://b/folder/"}, {}, reader(SSM))
    assert cfg.input == S3Location("b", "folder/")
    assert "input-bucket must be an S3 bucket name" in problems({}, {**SSM, "input-bucket": "a b"})


@pytest.mark.parametrize("name", ["input-key", "model-key", "package-key", "transform-key"])
def test_each_key_is_validated_under_its_own_name(name: str) -> None:
    """A key with a '..' segment is refused, naming the parameter it came from."""
    assert f"{name} 'a/../b' is not a usable object key" in problems({name: "a/../b"})


def test_the_artifact_bucket_is_validated_and_normalised() -> None:
    """artifact-bucket is cleaned like the others: a pasted URI is read, a bad name refused."""
    cfg = resolve({"artifact-bucket": "s3://art2/", "script-key": "s.py"}, {}, reader(SSM))
    assert cfg.script == S3Location("art2", "s.py")
    assert "artifact-bucket must be an S3 bucket name" in problems({"artifact-bucket": "a b"})


def test_a_bad_bucket_in_an_s3_uri_names_the_parameter() -> None:
    """An s3:// URI with an impossible bucket name is refused under the parameter's name."""
    assert "input must be an S3 bucket name" in problems({"input": "s3://a b/k.csv"})


def test_a_bad_script_timeout_is_named() -> None:
    """A script timeout that is no positive number is refused, quoting it."""
    message = problems({"script-timeout": "soon"})
    assert "script-timeout must be a positive, finite number of seconds, got 'soon'" in message


def test_numbers_below_their_minimum_are_named_with_the_value() -> None:
    """keep-outputs, threads and partitions below their minimum, or not numbers, are quoted."""
    message = problems({"keep-outputs": "many", "threads": "0", "partitions": "0"})
    assert "keep-outputs must be an integer >= 0, got 'many'" in message
    assert "threads must be an integer >= 1, got '0'" in message
    assert "partitions must be an integer >= 1, got '0'" in message
    assert resolve({"keep-outputs": "0"}, {}, reader(SSM)).keep_outputs == 0


def test_bad_choices_are_named_with_the_choices() -> None:
    """output-format, on-bad-rows and phase outside their choices list what is allowed."""
    message = problems({"output-format": "xlsx", "on-bad-rows": "maybe", "phase": "split"})
    assert "output-format must be one of parquet, csv, both, got 'xlsx'" in message
    assert "on-bad-rows must be fail or skip, got 'maybe'" in message
    assert "phase must be one of single, map, reduce, commit, got 'split'" in message


def test_a_reduce_task_needs_a_partition_within_range() -> None:
    """A reduce phase without partition, or a partition past partitions, is refused."""
    needs = "phase reduce needs partition (the 0-based partition to deduplicate)"
    assert needs in problem_list({"phase": "reduce"})
    message = problems({"phase": "reduce", "partition": "4", "partitions": "4"})
    assert "partition must be below partitions (4), got 4" in message
    cfg = resolve({"phase": "reduce", "partition": "3", "partitions": "4"}, {}, reader(SSM))
    assert (cfg.partition, cfg.partitions) == (3, 4)
    assert "partition must be an integer >= 0, got '-1'" in problems({"partition": "-1"})


def test_reduce_and_commit_need_no_input_key() -> None:
    """A fan-out's reduce or commit task reads work files: no input-key is asked for."""
    ssm = {k: v for k, v in SSM.items() if k != "input-key"}
    cfg = resolve({"phase": "Commit"}, {}, reader(ssm))
    assert cfg.input == S3Location("in", "")
    assert "input-key" in problems({}, ssm)
    cfg = resolve({"phase": "reduce", "partition": "0"}, {}, reader(ssm))
    assert cfg.input == S3Location("in", "")
    cfg = resolve({"phase": "commit"}, {}, reader(SSM))
    assert cfg.input == S3Location("in", "raw/members.csv")
    no_input = {k: v for k, v in SSM.items() if not k.startswith("input-")}
    cfg = resolve({"phase": "commit", "dataset": "d"}, {}, reader(no_input))
    assert cfg.input == S3Location("", "")


def test_run_ids_are_checked_and_generated() -> None:
    """A run id outside the safe alphabet is refused; without one, a sortable id is made."""
    assert "run-id must be letters, digits and ._:- (max 128), got 'a b'" in problems(
        {"run-id": "a b"}
    )
    assert "run-id must" in problems({"run-id": "x" * 129})
    assert resolve({"run-id": "x" * 128}, {}, reader(SSM)).run_id == "x" * 128
    made = resolve({}, {}, reader(SSM)).run_id
    assert re.fullmatch(r"run-\d{8}T\d{6}Z-[0-9a-f]{6}", made)
    assert new_run_id() != new_run_id()


def test_a_generated_run_id_carries_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The time in a generated run id is UTC (its Z), also where the local zone is not."""
    previous = os.environ.get("TZ")
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: never the same hour as UTC
    time.tzset()
    try:
        before = datetime.now(UTC).replace(microsecond=0)
        stamp = datetime.strptime(new_run_id()[4:19], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        after = datetime.now(UTC)
    finally:
        if previous is None:
            monkeypatch.delenv("TZ")
        else:
            monkeypatch.setenv("TZ", previous)
        time.tzset()  # the C library caches the zone: re-read it for the tests that follow
    assert before <= stamp <= after


def test_the_missing_parameters_message_in_full() -> None:
    """Missing parameters are named once each, by SSM name and variable, with the local way out."""
    with pytest.raises(ConfigError) as info:
        resolve({"param-prefix": "/p"}, {}, reader({"artifact-bucket": "art", "input-key": "k"}))
    assert str(info.value) == (
        "missing parameters: /p/input-bucket, /p/output-bucket (put them in SSM Parameter Store, "
        "or set DSJOB_INPUT_BUCKET, DSJOB_OUTPUT_BUCKET; or run locally with --input FILE "
        "--output-dir DIR)"
    )


def test_the_empty_prefix_message_in_full() -> None:
    """Nothing under the prefix: one message names prefix and region and what the run needs."""
    with pytest.raises(ConfigError) as info:
        resolve({}, {"AWS_REGION": "eu-west-1", "DSJOB_OUTPUT_BUCKET": "o"}, reader({}))
    assert str(info.value) == (
        "No parameters under /ds/preprocessing in eu-west-1 (the run needs input-bucket, "
        "input-key, artifact-bucket): check AWS_REGION and --param-prefix, or seed them with "
        "`dsjob local seed` (or set DSJOB_INPUT_BUCKET, DSJOB_INPUT_KEY, DSJOB_ARTIFACT_BUCKET; "
        "or run locally with --input FILE --output-dir DIR)"
    )


def test_problems_are_joined_after_the_missing_ones() -> None:
    """Every problem is reported at once, the missing parameters first, separated by '; '."""
    with pytest.raises(ConfigError) as info:
        resolve({"keep-outputs": "-1"}, {}, reader({"output-bucket": "o", "artifact-bucket": "a"}))
    parts = str(info.value).split("; ")
    assert parts[0].startswith("missing parameters: /ds/preprocessing/input-bucket, ")
    assert parts[-1] == "keep-outputs must be an integer >= 0, got '-1'"


def test_secure_strings_are_redacted_by_either_spelling() -> None:
    """A SecureString parameter is hidden in the redacted config under its field name too."""
    cfg = resolve({}, {}, reader({**SSM, "id-column": "pk"}, frozenset({"id-column"})))
    assert cfg.secret_names >= {"id-column", "id_column"}
    assert cfg.redacted()["id_column"] == "***"
    assert cfg.redacted()["dataset"] == "members"


@pytest.mark.parametrize(
    ("key", "dataset"),
    [
        ("a/b/sales.csv.gz", "sales"),
        ("sales.csv.zst", "sales"),
        ("sales.parquet", "sales"),
        ("sales.tsv", "sales"),
        ("notes.txt", "notes"),
        ("raw/", "data"),  # a folder of inputs has no stem
        ("...csv", "data"),
        (f"{'n' * 200}.csv", "n" * 128),
        ("-x y-.csv", "x-y"),
        ("Xenon.csv", "Xenon"),
    ],
)
def test_the_default_dataset_is_the_input_stem(key: str, dataset: str) -> None:
    """The dataset defaults to the input's name without its data suffixes, in the safe alphabet."""
    assert resolve({"input-key": key}, {}, reader(SSM)).dataset == dataset


@pytest.mark.parametrize(
    ("flags", "env", "local"),
    [
        ({"input": "a.csv", "output-dir": "o"}, {}, True),
        ({}, {"DSJOB_INPUT": "a.csv", "DSJOB_OUTPUT_DIR": "o"}, True),
        ({"input": "a.csv"}, {"DSJOB_OUTPUT_DIR": "o"}, True),
        ({"input": "s3://b/a.csv", "output-dir": "o"}, {}, False),
        ({"input": "a.csv"}, {}, False),
        ({"output-dir": "o"}, {}, False),
        ({"input": None, "output-dir": "o"}, {"DSJOB_INPUT": "a.csv"}, True),
    ],
)
def test_pure_local_mode_needs_a_local_input_and_an_output_dir(
    flags: dict[str, str | None], env: dict[str, str], *, local: bool
) -> None:
    """Only a local input with an output dir (from flags or DSJOB_*) runs without AWS."""
    assert is_pure_local(flags, env) is local
