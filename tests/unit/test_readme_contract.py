"""The README's job contract states the exit codes and limits the code enforces."""

from __future__ import annotations

import re

import pytest

from dsjob import archive, history, lease, orphans, processing, scriptoutputs
from dsjob.errors import ExitCode
from dsjob.schedule import tick_run_id
from tests.support.paths import REPO

pytestmark = pytest.mark.unit

_ROW = re.compile(r"^\| (\d+) \| (.+?) \|\s*(.*?)\s*\|$")


def _section(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n### {title}\n")
    end = text.find("\n#", start + 1)
    return text[start:end]


def _exit_table() -> dict[int, str]:
    rows = (_ROW.match(line) for line in _section("Exit codes").splitlines())
    return {int(m.group(1)): m.group(3) for m in rows if m}


def test_exit_code_table_lists_exactly_the_exit_codes() -> None:
    """Every `ExitCode` has a row in the README's exit-code table, and no other code does."""
    assert sorted(_exit_table()) == sorted(code.value for code in ExitCode)


def test_exit_code_table_marks_only_transient_as_retried() -> None:
    """The retry column says yes for exit 5 alone, the only code Step Functions retries."""
    retried = [code for code, retry in _exit_table().items() if "yes" in retry]
    assert retried == [ExitCode.TRANSIENT.value]


@pytest.mark.parametrize(
    ("limit", "phrase"),
    [
        (processing.MAX_COLUMNS, "at most {:,} columns"),
        (processing.SAMPLE_ROWS, "first {:,} rows"),
        (archive.MAX_MEMBERS, "at most {:,} members"),
        (archive.MAX_DEPTH, "{} path levels"),
        (scriptoutputs.MAX_OUTPUT_DEPTH, "more than {} levels deep"),
    ],
)
def test_readme_quotes_the_limits_the_code_enforces(limit: int, phrase: str) -> None:
    """Each limit the README's policies quote is the value the code uses."""
    text = " ".join(_section("Data and transform policies (built-in step)").split())
    text += " " + " ".join(_section("Script policies").split())
    assert phrase.format(limit) in text


def test_outputs_section_names_every_reserved_folder_of_the_prefix() -> None:
    """Each folder dsjob keeps under the output prefix (history.RESERVED) is in the layout."""
    layout = _section("Outputs")
    for folder in history.RESERVED:
        assert f"<output-prefix>{folder}" in layout


def test_nothing_is_lost_quotes_the_lease_and_orphan_rules_the_code_applies() -> None:
    """The lease variable, its default, the lease folder and the no-lease orphan age match."""
    text = " ".join(_section("Nothing is lost").split())
    assert f"`{lease.ENV_NAME}`, default {lease.DEFAULT_TTL_S:g} s" in text
    assert f"`{lease.FOLDER}<dataset>/<run-id>.<token>.json`" in text
    hours = orphans.ORPHAN_AGE.total_seconds() / 3600
    no_lease = "a run with no lease (a fan-out run between phases, an older dsjob)"
    assert f"{no_lease}: after {hours:g} h" in text
    beat = {2: "half", 3: "third", 4: "quarter"}[lease.BEATS_PER_TTL]
    assert f"every {beat} of the lease time" in text


def test_schedule_tick_example_is_the_run_id_the_code_derives() -> None:
    """The README's example tick gives the run id it shows."""
    text = " ".join(_section("Outputs").split())
    tick, run_id = "2027-01-15T09:00:00Z", tick_run_id("2027-01-15T09:00:00Z")
    assert f"(`{tick}` gives `{run_id}`)" in text
