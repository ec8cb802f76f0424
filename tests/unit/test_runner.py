"""`dsjob.run(...)`, the notebooks' in-process run: keyword flags, typos refused up front."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import dsjob
from dsjob.errors import ConfigError, ExitCode

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.unit


def test_run_takes_flags_as_keywords_and_returns_the_summary(tmp_path: Path) -> None:
    """`dsjob.run(input=..., output_dir=..., output_format="csv")` runs like the CLI flags."""
    data = tmp_path / "people.csv"
    data.write_text("id,name\n1,a\n1,a\n2,b\n", encoding="utf-8")
    out = tmp_path / "out"
    summary = dsjob.run(input=data, output_dir=out, output_format="csv", run_id="nb-1")
    assert (summary.status, summary.run_id) == ("succeeded", "nb-1")
    assert (summary.rows_in, summary.rows_out, summary.dropped["duplicate"]) == (3, 2, 1)
    assert [o.uri.rsplit(".", 1)[-1] for o in summary.outputs] == ["csv"]
    assert (out / "manifests" / "nb-1.json").is_file()


def test_a_misspelt_keyword_is_refused_with_the_nearest_name(tmp_path: Path) -> None:
    """An unknown keyword is a ConfigError (exit 2) naming it and the nearest one; nothing runs."""
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as info:
        dsjob.run(input=tmp_path / "x.csv", output_dir=out, output_fromat="csv")
    assert info.value.exit_code == ExitCode.CONFIG
    assert "unknown parameter 'output_fromat' (did you mean output_format?)" in str(info.value)
    assert not out.exists()
