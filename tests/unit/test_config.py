"""Configuration precedence and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsjob.config import S3Location, env_name, resolve
from dsjob.errors import ConfigError

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
