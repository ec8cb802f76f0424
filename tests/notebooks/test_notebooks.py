"""The notebooks execute top to bottom in a real kernel against the embedded AWS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import nbformat
import pytest
from nbclient import NotebookClient

from tests.support.paths import REPO

if TYPE_CHECKING:
    from tests.conftest import LocalServe

pytestmark = pytest.mark.notebook

NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 300


def read(path: Path) -> Any:
    """The notebook at path as an nbformat v4 node."""
    return nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]


def execute(name: str) -> Any:
    """Run every cell of notebooks/NAME in a fresh python3 kernel; raise on the first error."""
    notebook = read(NOTEBOOKS / name)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # CellExecutionError names the failing cell and its traceback
    return notebook


def text_of(notebook: Any) -> str:
    """Everything the notebook printed or displayed as text, concatenated."""
    parts: list[str] = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_notebooks_are_committed_without_outputs() -> None:
    """Every committed notebook has no outputs and no execution counts (nbstripout'd)."""
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01-explore.ipynb", "02-write-your-script.ipynb"]
    for name in names:
        notebook = read(NOTEBOOKS / name)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{name}: a cell still has outputs"
                assert cell.execution_count is None, f"{name}: a cell has an execution count"


def test_explore_profiles_the_emulated_input(
    local_aws: LocalServe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """01-explore profiles raw/members.csv from the emulator named by AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_aws.endpoint)
    out = text_of(execute("01-explore.ipynb"))
    assert f"using the emulator at {local_aws.endpoint}" in out
    # The seeded sample has 1228 rows; the notebook asserts DuckDB and pandas agree on them.
    assert "'rows': 1228" in out
    assert "profile.png" in out


def test_explore_starts_its_own_emulator_when_none_is_given() -> None:
    """Without AWS_ENDPOINT_URL, 01-explore starts a seeded emulator in its kernel and runs."""
    out = text_of(execute("01-explore.ipynb"))
    assert "started an emulator at http://127.0.0.1:" in out
    assert "'rows': 1228" in out


def test_write_your_script_runs_the_job_locally_and_against_the_emulator(
    local_aws: LocalServe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """02 builds a package and script, runs the job locally and publishes to the emulator."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_aws.endpoint)
    out = text_of(execute("02-write-your-script.ipynb"))
    # dsjob.run() returned summaries (local, then S3); `dsjob pack <dir>` found member_features/.
    assert out.count("status='succeeded'") == 2
    assert "'null_id_or_duplicate':" in out  # the script's report reached the manifest
    assert "built    package.tar.gz" in out

    # What the notebook published is really in the emulator: a CSV and a succeeded manifest.
    s3 = boto3.client("s3", endpoint_url=local_aws.endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="dsjob-output")["Contents"]]
    manifests = [k for k in keys if k.startswith("processed/manifests/")]
    outputs = [k for k in keys if k.startswith("processed/member_features_")]
    assert len(manifests) == 1, keys
    assert len(outputs) == 1, keys
    manifest = json.loads(s3.get_object(Bucket="dsjob-output", Key=manifests[0])["Body"].read())
    assert manifest["status"] == "succeeded"
    assert manifest["mode"] == "script"
