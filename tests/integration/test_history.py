"""History, sample data, script reports and prod parity, through the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.credentials import client
from tests.support.paths import DSJOB, REPO

if TYPE_CHECKING:
    from tests.support.emulator import LocalServe

pytestmark = pytest.mark.integration


def dsjob(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DSJOB), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env or {**os.environ, "DSJOB_LOG_FORMAT": "json"},
    )


def last_json(stdout: str) -> dict[str, object]:
    status: dict[str, object] = json.loads(stdout.strip().splitlines()[-1])
    return status


def test_readme_sample_run_works_as_written_and_history_reads_it(tmp_path: Path) -> None:
    """`dsjob sample`, the README's `dsjob run --input data.csv`, then runs ls/show, outputs get."""
    data, out = tmp_path / "data.csv", tmp_path / "out"
    assert dsjob("sample", "-o", str(data), "--rows", "300").returncode == 0
    first = dsjob("run", "--input", str(data), "--output-dir", str(out), "--run-id", "r1")
    assert first.returncode == 0, first.stderr
    status = last_json(first.stdout)
    assert status["rows_in"] == 300

    listing = dsjob("runs", "ls", "--output-dir", str(out))
    assert listing.returncode == 0, listing.stderr
    row = next(line.split() for line in listing.stdout.splitlines() if line.startswith("r1 "))
    assert row[1:3] == ["succeeded", "data"]
    assert row[4:6] == ["300", f"{status['rows_out']:,}"]

    shown = dsjob("runs", "show", "r1", "--output-dir", str(out))
    assert "rows      in 300 -> out" in shown.stdout
    assert "versions  python" in shown.stdout
    assert dsjob("runs", "show", "nope", "--output-dir", str(out)).returncode == 3

    got = tmp_path / "got"
    fetched = dsjob("outputs", "get", "data", "--output-dir", str(out), "--to", str(got))
    assert fetched.returncode == 0, fetched.stderr
    outputs = status["outputs"]
    assert isinstance(outputs, list)
    published = outputs[0].rsplit("/", 1)[-1]
    assert [p.name for p in got.iterdir()] == [published]
    assert (got / published).read_bytes() == (out / published).read_bytes()


def test_example_script_commands_work_as_written(tmp_path: Path) -> None:
    """The commands in examples/script.py's docstring run as written, from a copy of examples/."""
    doc = (REPO / "examples" / "script.py").read_text(encoding="utf-8").split('"""')[1]
    joined = doc.replace("\\\n", " ")  # shell line continuations
    commands = re.findall(r"^    (dsjob .*)$", joined, re.MULTILINE)
    assert [c.split()[1] for c in commands] == ["sample", "pack", "run"]
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSJOB_", "AWS_"))}
    env["PATH"] = f"{DSJOB.parent}{os.pathsep}{env['PATH']}"
    for command in commands:
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
    status = last_json(proc.stdout)
    assert status["status"] == "succeeded"
    outputs = status["outputs"]
    assert isinstance(outputs, list)
    assert [Path(o).parent.name for o in outputs] == ["out"]
    assert all((tmp_path / o).is_file() for o in outputs)


def test_runs_ls_on_s3_lists_failed_runs_from_their_status_object(
    local_aws: LocalServe, tmp_path: Path
) -> None:
    """A failed S3 run has no manifest; `dsjob runs ls` still shows it, from status/."""
    env = local_aws.env()
    ok = dsjob("run", "--run-id", "ok-1", env=env)
    assert ok.returncode == 0, ok.stderr
    assert dsjob("run", "--run-id", "ok-2", "--dataset", "other", env=env).returncode == 0
    assert dsjob("run", "--run-id", "bad-1", "--input-key", "raw/x.csv", env=env).returncode == 3
    listing = dsjob("runs", "ls", env=env).stdout.splitlines()
    by_id = {line.split()[0]: line.split()[1] for line in listing[1:]}
    assert by_id == {"ok-1": "succeeded", "ok-2": "succeeded", "bad-1": "failed"}
    only = dsjob("runs", "ls", "--dataset", "other", env=env).stdout.splitlines()
    assert [line.split()[:3] for line in only[1:]] == [["ok-2", "succeeded", "other"]]
    shown = dsjob("runs", "show", "bad-1", env=env).stdout
    assert "status    failed (exit 3)" in shown
    assert "raw/x.csv" in shown

    # `outputs get` from S3: the current output of the dataset, byte for byte
    got = dsjob("outputs", "get", "members", "--to", str(tmp_path), env=env)
    assert got.returncode == 0, got.stderr
    uris = last_json(ok.stdout)["outputs"]
    assert isinstance(uris, list)
    assert len(uris) == 1, uris
    bucket, key = str(uris[0]).removeprefix("s3://").split("/", 1)
    stored = client("s3", local_aws.endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
    assert [p.read_bytes() for p in tmp_path.iterdir()] == [stored]


def test_local_run_mirror_leaves_outputs_on_disk(tmp_path: Path) -> None:
    """`dsjob local run --mirror DIR` (what `make run` does) copies outputs and manifest out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
    proc = dsjob("local", "run", "--rows", "200", "--mirror", str(tmp_path / "out"), env=env)
    assert proc.returncode == 0, proc.stderr
    status = last_json(proc.stdout)
    outputs = status["outputs"]
    assert isinstance(outputs, list)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted([f"{status['run_id']}.json", outputs[0].rsplit("/", 1)[-1]])


def test_make_run_leaves_the_outputs_in_out(tmp_path: Path) -> None:
    """`make run` (the README's first command) leaves the output and its manifest in ./out."""
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")  # out/ lands beside it, not in REPO
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DSJOB_"))}
    # -o setup: this venv is already set up; the copy has no scripts/ to run it with
    proc = subprocess.run(
        ["make", "-s", "-o", "setup", "run", f"VENV={DSJOB.parent.parent}", "ROWS=50"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = last_json(proc.stdout)
    outputs = status["outputs"]
    assert isinstance(outputs, list)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted([f"{status['run_id']}.json", outputs[0].rsplit("/", 1)[-1]])


def test_readme_sample_summary_matches_a_real_run() -> None:
    """The README's sample summary shows the counts a default `dsjob local run` really gives."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
    proc = dsjob("local", "run", env={**env, "DSJOB_LOG_FORMAT": "text"})
    assert proc.returncode == 0, proc.stderr
    real = re.search(r"rows     in .*", proc.stderr)
    assert real is not None
    assert f"      {real.group(0)}\n" in (REPO / "README.md").read_text()


def test_script_report_lands_in_manifest_summary_and_status(tmp_path: Path) -> None:
    """Counts and metrics from context().report() reach the manifest, summary and status line."""
    data, out, script = tmp_path / "d.csv", tmp_path / "out", tmp_path / "script.py"
    data.write_text("id\n1\n2\n\n3\n")
    script.write_text(
        "import dsjob\n"
        "ctx = dsjob.context()\n"
        "(ctx.output_dir / 'o.csv').write_text('id\\n1\\n')\n"
        "ctx.report(rows_in=4, rows_out=1, dropped={'null_id': 1})\n"
        "ctx.report(dropped={'null_id': 1, 'late': 1}, metrics={'auc': 0.9})\n"
    )
    proc = dsjob("run", "--input", str(data), "--output-dir", str(out), "--script", str(script))
    assert proc.returncode == 0, proc.stderr
    status = last_json(proc.stdout)
    assert (status["rows_in"], status["rows_out"]) == (4, 1)
    assert status["dropped"] == {"null_id": 2, "late": 1}
    assert status["metrics"] == {"auc": 0.9}
    summary = [json.loads(x) for x in proc.stderr.splitlines() if '"run summary"' in x]
    assert [s["metrics"] for s in summary] == [{"auc": 0.9}]
    manifest = json.loads((out / "manifests" / f"{status['run_id']}.json").read_text())
    assert manifest["counts"]["dropped"] == {"null_id": 2, "late": 1}
    assert manifest["counts"]["metrics"] == {"auc": 0.9}


def test_script_importing_what_the_prod_lock_lacks_warns(tmp_path: Path) -> None:
    """A script importing polars (dev venv only) runs, with a warning naming polars and the lock."""
    data, out, script = tmp_path / "d.csv", tmp_path / "out", tmp_path / "script.py"
    data.write_text("id\n1\n")
    script.write_text(
        "import json, pandas\n"
        "try:\n    import polars\nexcept ImportError:\n    pass\n"
        "import dsjob\n"
        "(dsjob.context().output_dir / 'o.csv').write_text('id\\n1\\n')\n"
    )
    proc = dsjob("run", "--input", str(data), "--output-dir", str(out), "--script", str(script))
    assert proc.returncode == 0, proc.stderr
    warnings = [json.loads(x) for x in proc.stderr.splitlines() if '"warning"' in x]
    named = [w for w in warnings if w.get("import")]
    assert [w["import"] for w in named] == ["polars"]  # not pandas (locked), not json (stdlib)
    assert "requirements.lock" in named[0]["message"]


def test_make_help_prints_no_colour_into_a_pipe() -> None:
    """`make help | cat` has no escape codes; the targets are still listed."""
    proc = subprocess.run(
        ["make", "-s", "help"], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert "\x1b" not in proc.stdout
    assert re.search(r"^  run\s+Run the job", proc.stdout, re.MULTILINE)


def test_runs_ls_dataset_lists_that_datasets_failed_runs_only(local_aws: LocalServe) -> None:
    """A failed run's status object names its dataset: `runs ls --dataset` lists it, not another's.

    A status object written before it named the dataset still lists, under "-".
    """
    env = local_aws.env()
    for run_id, name in (("bad-alpha", "alpha"), ("bad-beta", "beta")):
        proc = dsjob(
            "run", "--run-id", run_id, "--dataset", name, "--input-key", "raw/no.csv", env=env
        )
        assert proc.returncode == 3, proc.stderr
    old = {"status": "failed", "exit_code": 3, "error": "missing", "run_id": "old-1"}
    s3 = client("s3", local_aws.endpoint)
    s3.put_object(Bucket="dsjob-output", Key="processed/status/old-1.json", Body=json.dumps(old))
    alpha = dsjob("runs", "ls", "--dataset", "alpha", env=env).stdout.splitlines()
    assert [line.split()[:3] for line in alpha[1:]] == [["bad-alpha", "failed", "alpha"]]
    listing = dsjob("runs", "ls", env=env).stdout.splitlines()
    rows = {line.split()[0]: line.split()[1:3] for line in listing[1:]}
    assert rows["old-1"] == ["failed", "-"]
    assert rows["bad-beta"] == ["failed", "beta"]
