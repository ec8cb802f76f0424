"""Configuration precedence and validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dsjob.config import OTHER_ENV_NAMES, PARAMS, S3Location, env_name, resolve
from dsjob.errors import ConfigError
from tests.support.paths import REPO

pytestmark = pytest.mark.unit

SSM = {
    "input-bucket": "in",
    "input-key": "raw/members.csv",
    "output-bucket": "out",
    "artifact-bucket": "art",
}


def reader(values: dict[str, str], secure: frozenset[str] = frozenset()):
    calls: list[str] = []

    def read(prefix: str) -> tuple[dict[str, str], frozenset[str]]:
        calls.append(prefix)
        return dict(values), secure

    read.calls = calls  # type: ignore[attr-defined]
    return read


def test_flag_beats_env_beats_ssm_beats_default() -> None:
    """A CLI flag wins over DSJOB_* env, which wins over SSM, which wins over the default."""
    ssm = reader({**SSM, "output-prefix": "from-ssm/", "keep-outputs": "3"})
    cfg = resolve(
        {"input-key": "flag.csv"},
        {"DSJOB_INPUT_KEY": "env.csv", "DSJOB_KEEP_OUTPUTS": "2"},
        ssm,
    )
    assert cfg.input == S3Location("in", "flag.csv")
    assert cfg.keep_outputs == 2
    assert cfg.output == S3Location("out", "from-ssm/")
    assert cfg.id_column == "id"
    assert cfg.sources["input-key"] == "flag"
    assert cfg.sources["keep-outputs"] == "env"
    assert cfg.sources["output-prefix"] == "ssm"


def test_every_missing_parameter_is_named_at_once() -> None:
    """Validation reports all missing parameters in one message, with their full SSM names."""
    with pytest.raises(ConfigError) as info:
        resolve({}, {}, reader({"artifact-bucket": "art"}))
    message = str(info.value)
    for name in ("input-bucket", "input-key", "output-bucket"):
        assert f"/ds/preprocessing/{name}" in message
    assert "DSJOB_INPUT_BUCKET" in message


def test_invalid_values_are_reported_together() -> None:
    """Bad output-format, keep-outputs and on-bad-rows are all reported in one error."""
    values = {**SSM, "output-format": "xlsx", "keep-outputs": "-1", "on-bad-rows": "ignore"}
    with pytest.raises(ConfigError) as info:
        resolve({}, {}, reader(values))
    message = str(info.value)
    assert "output-format" in message
    assert "keep-outputs" in message
    assert "on-bad-rows" in message


def test_prefix_is_overridable_and_read_once() -> None:
    """DSJOB_PARAM_PREFIX changes the SSM path, which is read exactly once."""
    ssm = reader(SSM)
    resolve({}, {"DSJOB_PARAM_PREFIX": "/team/job/"}, ssm)
    assert ssm.calls == ["/team/job"]


def test_pure_local_mode_needs_no_buckets(tmp_path: Path) -> None:
    """With no SSM reader, a local input and output dir are a complete configuration."""
    cfg = resolve({"input": str(tmp_path / "a.csv"), "output-dir": str(tmp_path / "o")}, {}, None)
    assert cfg.local_mode
    assert cfg.output == tmp_path / "o"
    assert cfg.dataset == "a"


def test_both_formats_and_dataset_from_key() -> None:
    """output-format=both writes parquet and csv; the dataset defaults to the input's stem."""
    cfg = resolve({}, {}, reader({**SSM, "output-format": "both"}))
    assert cfg.output_formats == ("parquet", "csv")
    assert cfg.dataset == "members"


def test_secret_looking_values_are_redacted() -> None:
    """Redacted config hides secret-looking names and SecureString parameters."""
    cfg = resolve({}, {}, reader({**SSM, "dataset": "x"}, frozenset({"dataset"})))
    assert cfg.redacted()["dataset"] == "***"
    assert cfg.redacted()["input"] == "s3://in/raw/members.csv"


def test_env_name() -> None:
    """Parameter names map to DSJOB_ variables."""
    assert env_name("input-key") == "DSJOB_INPUT_KEY"


def test_unknown_ssm_names_are_reported_with_other_problems() -> None:
    """A misspelt SSM name and a flag-only name are problems, reported with every other one."""
    values = {**SSM, "output-fromat": "csv", "run-id": "x", "keep-outputs": "-1"}
    with pytest.raises(ConfigError) as info:
        resolve({}, {}, reader(values))
    message = str(info.value)
    assert "unknown parameter /ds/preprocessing/output-fromat (did you mean output-format?)" in (
        message
    )
    assert "/ds/preprocessing/run-id is a per-run value" in message
    assert "keep-outputs must be an integer" in message


def test_unknown_env_name_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A misspelt DSJOB_* name is warned about, with the nearest name; known names are not."""
    env = {"DSJOB_OUTPUT_FROMAT": "csv", "DSJOB_LOG_FORMAT": "json", "DSJOB_REQUIRE_X": "1"}
    cfg = resolve({}, env, reader(SSM))
    assert cfg.output_formats == ("parquet",)
    hint = "(did you mean DSJOB_OUTPUT_FORMAT?)"
    expected = f"unknown environment variable DSJOB_OUTPUT_FROMAT {hint}"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"{expected}; it is ignored"]


def test_empty_prefix_names_prefix_and_region() -> None:
    """With nothing under the prefix, the error names the prefix and region, not each parameter."""
    with pytest.raises(ConfigError) as info:
        resolve({}, {"AWS_REGION": "eu-west-1"}, reader({}))
    message = str(info.value)
    assert message.startswith("No parameters under /ds/preprocessing in eu-west-1 (the run needs ")
    assert "/ds/preprocessing/input-key" not in message


def test_values_are_normalised_and_validated_together() -> None:
    """A pasted bucket URI is normalised; a bad dataset, prefix and memory limit are all named."""
    values = {**SSM, "output-bucket": " s3://out/ ", "output-prefix": "a/b"}
    cfg = resolve({}, {}, reader(values))
    assert cfg.output == S3Location("out", "a/b/")
    bad = {**SSM, "dataset": "café", "output-prefix": "../x/", "memory-limit": "lots"}
    with pytest.raises(ConfigError) as info:
        resolve({}, {}, reader(bad))
    for name in ("dataset must", "output-prefix must", "memory-limit 'lots'"):
        assert name in str(info.value)


def test_dataset_from_a_non_ascii_key_is_made_safe() -> None:
    """The default dataset, taken from the input's name, keeps only the safe alphabet."""
    cfg = resolve({}, {}, reader({**SSM, "input-key": "raw/été 2024.csv"}))
    assert cfg.dataset == "t-2024"


def test_every_dsjob_variable_the_project_sets_is_a_known_name() -> None:
    """No DSJOB_* name written in the images, compose or scripts is warned about as a typo."""
    # Read the files, not `git grep`: the devcontainer runs this suite on a workspace git
    # may refuse (another owner) or a worktree whose git dir is not mounted.
    roots = ["src", "docker", "compose.yaml", ".devcontainer", "scripts", "make", "Makefile"]
    name = re.compile(r"(?<![_A-Z])DSJOB_[A-Z][A-Z0-9_]*[A-Z0-9]")
    used: set[str] = set()
    for root in roots:
        top = REPO / root
        for path in [top] if top.is_file() else top.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                used.update(name.findall(path.read_text(encoding="utf-8", errors="ignore")))
    known = {env_name(p.name) for p in PARAMS} | OTHER_ENV_NAMES
    assert sorted(n for n in used - known if not n.startswith("DSJOB_REQUIRE")) == []
