"""The dev and prod images: clean builds, cached rebuilds, health, users, tools, budgets."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from packaging.markers import Marker

from tests.support.paths import REPO
from tests.support.versions import VERSIONS

from .imagekit import IMAGE_NAME, BuiltImage, Engine, base_image, build_image

pytestmark = [
    pytest.mark.container,
    pytest.mark.timeout(600),
]  # on top of the image builds (conftest)

# Fargate pulls the whole image on every start (no layer cache): size is start time.
PROD_BUDGET = 300 * 10**6
DEV_BUDGET = 2 * 10**9
OCI_LABELS = ("created", "revision", "version", "source", "title")


def steps(log: str) -> dict[str, bool]:
    """Build steps of a podman/buildah log -> whether each came from the layer cache.

    Keys are the instruction text ("RUN ...", "COPY ..."), prefixed with the stage
    index ("3:") so identical instructions in two stages stay apart.
    """
    result: dict[str, bool] = {}
    current: str | None = None
    for line in log.splitlines():
        match = re.match(r"^\[(\d+)/\d+\] STEP \d+/\d+: (.*)$", line)
        if match:
            current = f"{match.group(1)}:{match.group(2)}"
            result[current] = False
        elif current and line.startswith("--> Using cache"):
            result[current] = True
    return result


def find_step(parsed: dict[str, bool], *needles: str) -> list[tuple[str, bool]]:
    """The steps whose instruction contains every needle."""
    return [(k, v) for k, v in parsed.items() if all(n in k for n in needles)]


def layers(engine: Engine, ref: str) -> list[str]:
    """The image's layer digests, base first."""
    rootfs = engine.inspect(ref)["RootFS"]
    assert isinstance(rootfs, dict)
    return list(rootfs["Layers"])


def run_in(
    engine: Engine, image: str, *cmd: str, user: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command in a throwaway container, bypassing the entrypoint."""
    args = ["run", "--rm", "--entrypoint", cmd[0]]
    if user is not None:
        args += ["--user", user]
    return engine(*args, image, *cmd[1:], check=check)


def test_prod_builds_from_clean_cache_within_budget(prod_image: BuiltImage) -> None:
    """The prod image builds with no layer cache and stays under 300 MB uncompressed."""
    if not prod_image.clean:
        pytest.skip("CONTAINER_BUILD_CACHE=1: this session reused cached layers")
    print(f"prod first build {prod_image.seconds:.0f} s, size {prod_image.size / 1e6:.0f} MB")
    assert steps(prod_image.log), "no build steps in the build output"
    assert not any(steps(prod_image.log).values()), "a clean build used cached layers"
    assert "image size:" in prod_image.log
    assert prod_image.size < PROD_BUDGET, f"prod image is {prod_image.size / 1e6:.0f} MB"


def test_dev_builds_from_clean_cache_within_budget(dev_image: BuiltImage) -> None:
    """The dev image builds with no layer cache and stays under 2 GB uncompressed."""
    if not dev_image.clean:
        pytest.skip("CONTAINER_BUILD_CACHE=1: this session reused cached layers")
    print(f"dev first build {dev_image.seconds:.0f} s, size {dev_image.size / 1e6:.0f} MB")
    assert steps(dev_image.log), "no build steps in the build output"
    assert not any(steps(dev_image.log).values()), "a clean build used cached layers"
    assert dev_image.size < DEV_BUDGET, f"dev image is {dev_image.size / 1e6:.0f} MB"


def _context_copy(tmp_path: Path) -> Path:
    """A copy of the build context (and the scripts that build it) outside git."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy2(REPO / name, ctx / name)
    for lock in REPO.glob("requirements*.lock"):
        shutil.copy2(lock, ctx / lock.name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("src", "docker", "scripts", "config"):
        shutil.copytree(REPO / name, ctx / name, ignore=ignore)
    return ctx


@pytest.mark.parametrize("target", ["production", "dev"])
def test_rebuild_after_source_change_reuses_dependency_layers(
    engine: Engine, request: pytest.FixtureRequest, tmp_path: Path, target: str
) -> None:
    """Changing one src/ file rebuilds only the project layers; dependencies come from cache."""
    if engine.name != "podman":
        pytest.skip("the build-output parser reads buildah's step log")
    built: BuiltImage = request.getfixturevalue(
        "prod_image" if target == "production" else "dev_image"
    )
    ctx = _context_copy(tmp_path)
    name = "ds-preprocessing-rebuild-test"
    init = ctx / "src" / "dsjob" / "__init__.py"
    # A unique change: an identical one from an earlier run would come from the cache.
    marker = f"touched by the rebuild test {uuid.uuid4().hex}"
    init.write_text(init.read_text(encoding="utf-8") + f"\n# {marker}\n")
    # The copy is outside git: it records the image's commit, so only the source differs.
    rebuilt = build_image(
        engine, "--target", target,
        context=ctx, image_name=name, extra_env={"VCS_REF": built.revision},
    )  # fmt: skip
    try:
        # The dependency stages are not even walked: the script finds their image (tagged
        # by the session's build of the same inputs) and builds the final stage on it.
        assert "is up to date: building only" in rebuilt.log, rebuilt.log[-3000:]
        sync = find_step(steps(rebuilt.log), "RUN", "install-venv deps")  # builder's, for prod
        assert all(cached for _, cached in sync), f"dependency step rebuilt: {sync}"
        # The final stage interleaves with the stages it copies from, so compare the
        # images' layers instead: all but the project's last few are the same layers.
        before, after = layers(engine, built.ref), layers(engine, rebuilt.ref)
        shared = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), 0)
        assert len(after) == len(before)
        assert len(after) - shared <= 2, f"only {shared} of {len(after)} layers reused"
        assert shared > 0
        print(
            f"{target}: first build {built.seconds:.0f} s, "
            f"rebuild after one src change {rebuilt.seconds:.1f} s"
        )
        # The change is really in the rebuilt image.
        out = run_in(
            engine,
            rebuilt.ref,
            "sh",
            "-c",
            "cat /opt/venv/lib/python3*/site-packages/dsjob/__init__.py",
        )
        assert marker in out.stdout
    finally:
        engine("rmi", "--force", rebuilt.ref, rebuilt.tag, check=False)


def test_health_passes_in_dev_and_prod(
    engine: Engine, prod_image: BuiltImage, dev_image: BuiltImage
) -> None:
    """`make ml-test` runs `dsjob health` in both images and it passes against their locks."""
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "ml-test",
            f"ML_TEST_IMAGES={dev_image.ref} {prod_image.ref}",
            f"CONTAINER_ENGINE={engine.command}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("installed versions match") == 2, proc.stdout


def test_healthcheck_instruction_reports_healthy(engine: Engine, prod_image: BuiltImage) -> None:
    """The image's HEALTHCHECK (`dsjob health`) survives the build and reports healthy."""
    inspected = engine.inspect(prod_image.ref)
    config = inspected["Config"]
    assert isinstance(config, dict)
    # docker reports it in Config, podman next to it.
    health = config.get("Healthcheck") or inspected.get("Healthcheck")
    assert isinstance(health, dict), f"no HEALTHCHECK in the image config: {config}"
    assert health["Test"][-2:] == ["dsjob", "health"] or "dsjob health" in " ".join(health["Test"])
    cid = engine("run", "-d", "--entrypoint", "sleep", prod_image.ref, "300").stdout.strip()
    try:
        if engine.name == "podman":
            # Nothing runs podman health checks on a timer here (no systemd): run it.
            proc = engine("healthcheck", "run", cid, check=False)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        else:
            deadline = time.monotonic() + 60
            status = ""
            while time.monotonic() < deadline and status != "healthy":
                status = engine(
                    "inspect", "--format", "{{.State.Health.Status}}", cid
                ).stdout.strip()
                time.sleep(1)
            assert status == "healthy"
    finally:
        engine("rm", "--force", cid, check=False)


def test_health_fails_when_a_locked_package_drifts(
    engine: Engine, prod_image: BuiltImage, dev_image: BuiltImage, tmp_path: Path
) -> None:
    """Prod with `six` swapped for another real version fails `dsjob health` and `make ml-test`."""
    locked = re.search(r"^six==(\S+)", (REPO / "requirements.lock").read_text(), re.MULTILINE)
    assert locked, "six is no longer in requirements.lock: pick another pure-Python pin"
    other = "1.16.0" if locked.group(1) != "1.16.0" else "1.15.0"
    (tmp_path / "Dockerfile").write_text(
        f"FROM {dev_image.ref} AS tool\n"
        "USER root\n"
        "RUN --mount=type=secret,id=ca"
        " if [ -f /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi;"
        f" uv pip install --no-deps --python /opt/venv/bin/python --target /swap six=={other}\n"
        f"FROM {prod_image.ref}\n"
        "USER root\n"
        "COPY --from=tool /swap /tmp/swap\n"
        "RUN site=$(python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')"
        ' && rm -rf "$site"/six.py "$site"/six-*.dist-info'
        ' && cp -r /tmp/swap/. "$site"/ && rm -rf /tmp/swap\n'
        "USER 10001\n"
    )
    tag = "ds-preprocessing-drift-test:latest"
    args = ["build", "-t", tag, "-f", str(tmp_path / "Dockerfile")]
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if ca.is_file():
        args += ["--secret", f"id=ca,src={ca}"]
    engine(*args, str(tmp_path), timeout=600)
    try:
        proc = run_in(engine, tag, "dsjob", "health", check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        report = proc.stdout + proc.stderr
        assert "six" in report
        assert other in report
        make = subprocess.run(
            [
                "make",
                "--no-print-directory",
                "ml-test",
                f"ML_TEST_IMAGES={tag}",
                f"CONTAINER_ENGINE={engine.command}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert make.returncode != 0, make.stdout + make.stderr
    finally:
        engine("rmi", "--force", tag, check=False)


def test_prod_runs_as_10001_without_build_tools(engine: Engine, prod_image: BuiltImage) -> None:
    """Prod runs as uid 10001 and has no compiler, uv or pip (not even ensurepip)."""
    config = engine.inspect(prod_image.ref)["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001"
    assert run_in(engine, prod_image.ref, "id", "-u").stdout.strip() == "10001"
    tools = run_in(
        engine,
        prod_image.ref,
        "sh",
        "-c",
        "for t in gcc cc c++ g++ clang ld make uv pip pip3 pip3.11 pip3.12;"
        " do command -v $t; done; true",
    )
    assert tools.stdout.strip() == "", f"build tools in prod: {tools.stdout}"
    for module in ("pip", "ensurepip"):
        proc = run_in(engine, prod_image.ref, "python", "-m", module, "--version", check=False)
        assert proc.returncode != 0, f"python -m {module} works in prod: {proc.stdout}"


def norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_prod_venv_matches_requirements_lock(engine: Engine, prod_image: BuiltImage) -> None:
    """Prod's venv is exactly requirements.lock (for its Python) plus dsjob; it carries the lock."""
    probe = (
        "import json, importlib.metadata as m, packaging.markers as pm;"
        "print(json.dumps({'env': pm.default_environment(),"
        " 'dists': {d.metadata['Name']: d.version for d in m.distributions()}}))"
    )
    data = json.loads(run_in(engine, prod_image.ref, "python", "-c", probe).stdout)
    installed = {norm(k): v for k, v in data["dists"].items()}
    expected: dict[str, str] = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        match = re.match(
            r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line
        )
        if match and (not match.group(3) or Marker(match.group(3)).evaluate(data["env"])):
            expected[norm(match.group(1))] = match.group(2)
    version = re.search(
        r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE
    )
    assert version
    expected["dsjob"] = version.group(1)
    assert installed == expected
    carried = run_in(engine, prod_image.ref, "cat", "/opt/dsjob/requirements.lock").stdout
    assert carried == (REPO / "requirements.lock").read_text()


def test_prod_image_metadata(engine: Engine, prod_image: BuiltImage) -> None:
    """Prod carries the OCI labels from build args, tini -> dsjob run, and DSJOB_LOCK_FILE."""
    config = engine.inspect(prod_image.ref)["Config"]
    assert isinstance(config, dict)
    labels = config["Labels"]
    for key in OCI_LABELS:
        value = labels.get(f"org.opencontainers.image.{key}")
        assert value, f"label {key} missing"
    assert labels["org.opencontainers.image.revision"] == prod_image.revision
    assert labels["org.opencontainers.image.title"] == IMAGE_NAME
    assert config["Entrypoint"] == ["tini", "--", "dsjob", "run"]
    assert "DSJOB_LOCK_FILE=/opt/dsjob/requirements.lock" in config["Env"]
    tag_version, _, sha = prod_image.ref.split(":", 1)[1].partition("-")
    assert labels["org.opencontainers.image.version"] == tag_version
    assert prod_image.revision.startswith(sha)
    assert engine.inspect(prod_image.tag)["Id"] == engine.inspect(prod_image.ref)["Id"]


def test_dev_has_the_tools(engine: Engine, dev_image: BuiltImage) -> None:
    """Dev runs as uid 1000 with JupyterLab, ruff, mypy, pytest, the pinned DuckDB CLI, git."""
    assert run_in(engine, dev_image.ref, "id", "-u").stdout.strip() == "1000"
    script = (
        "set -e; jupyter-lab --version; ruff --version; mypy --version; pytest --version;"
        " duckdb --version; git --version; make --version | head -1; curl --version | head -1;"
        " nbstripout --version; python -c 'import ipykernel, moto; print(\"kernel ok\")'"
    )
    out = run_in(engine, dev_image.ref, "bash", "-c", script).stdout
    assert VERSIONS["DUCKDB_CLI_VERSION"] in out, out
    assert "kernel ok" in out
    for tool in ("ruff", "mypy", "pytest", "git version", "GNU Make", "curl"):
        assert tool in out, out


def test_dev_shell_has_prompt_and_aliases(engine: Engine, dev_image: BuiltImage) -> None:
    """An interactive dev shell has the container prompt and the aliases (test = pytest)."""
    commands = (
        "type data ml lint ml-versions health-check jupyter-lab\n"
        'echo "PROMPT=$PS1"\n'
        "test --version\n"
        "health-check && echo HEALTH-OK\n"
        "exit\n"
    )
    proc = engine(
        "run",
        "--rm",
        "-i",
        "--entrypoint",
        "bash",
        dev_image.ref,
        "-i",
        stdin=commands,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    for name in ("data", "ml", "lint", "ml-versions", "health-check", "jupyter-lab"):
        assert re.search(rf"^{re.escape(name)} is (aliased|a function)", out, re.MULTILINE), out
    assert re.search(r"^PROMPT=.*ds-preprocessing:dev", out, re.MULTILINE), out
    assert "pytest 9" in out or re.search(r"^pytest \d", out, re.MULTILINE), out
    assert "HEALTH-OK" in out, out


def test_builds_on_the_configured_base(engine: Engine, prod_image: BuiltImage) -> None:
    """The images build on BASE_IMAGE (CI: the Debian base bootstrapped from packages)."""
    history = engine("history", "--no-trunc", "--format", "{{.ID}}", prod_image.ref).stdout.split()
    if base_image().startswith("localhost/"):
        assert "bootstrapped on this machine: exempt from the digest pin check" in prod_image.log
    base = engine.inspect(base_image())["Id"]
    assert isinstance(base, str)
    assert any(base.startswith(layer) or layer.startswith(base[:12]) for layer in history)
