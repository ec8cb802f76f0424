"""The embedded AWS: a moto server on loopback that real boto3 talks to, seeded with a job.

`connect()` is the one-line start for notebooks and tests: it reuses the emulator
named by AWS_ENDPOINT_URL, or starts one in this process, seeds it, and hands
back ready boto3 clients.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from dsjob.config import DEFAULT_PREFIX
from dsjob.errors import ConfigError

if TYPE_CHECKING:
    from dsjob.aws import Clients

LOGGER = logging.getLogger(__name__)

INPUT_BUCKET = "dsjob-input"
OUTPUT_BUCKET = "dsjob-output"
ARTIFACT_BUCKET = "dsjob-artifacts"
INPUT_KEY = "raw/members.csv"
SCRIPT_KEY = "jobs/script.py"
PACKAGE_KEY = "jobs/package.tar.gz"
# moto accepts any credentials; these keep boto3 from looking for a real profile.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class LocalAws:
    """A running moto server; `endpoint_url` is what AWS_ENDPOINT_URL should say."""

    server: Any
    endpoint_url: str

    def stop(self) -> None:
        """Shut the server down."""
        self.server.stop()

    def __enter__(self) -> Self:
        """Use as a context manager: stopped on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the server."""
        self.stop()


def start(host: str = "127.0.0.1", port: int = 0) -> LocalAws:
    """Start moto's server in a thread (port 0: a free port) and point this process at it.

    Sets AWS_ENDPOINT_URL, dummy credentials and a region in `os.environ`, so every
    boto3 client made afterwards talks to the emulator (and never with real keys).
    """
    try:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 - dev dependency
    except ImportError as exc:
        raise ConfigError(
            "the embedded AWS needs the dev dependencies (moto[server]): run `make setup`"
        ) from exc
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    endpoint = f"http://{bound_host}:{bound_port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    # The emulator's dummy keys, not whatever real ones are exported: nothing real
    # should reach (or be printed for) a local emulator.
    os.environ.update(FAKE_CREDENTIALS)
    LOGGER.info("embedded AWS started", extra={"endpoint": endpoint})
    return LocalAws(server, endpoint)


def seed(
    clients: Clients,
    *,
    rows: int = 1228,
    random_seed: int = 7,
    script_dir: Path | None = None,
    prefix: str = DEFAULT_PREFIX,
    progress: bool = False,
) -> dict[str, str]:
    """Create the buckets, the SSM parameters and the sample input (and script + package).

    Args:
        clients: AWS clients pointed at the emulator.
        rows: sample rows to generate.
        random_seed: seed of the generator (same seed, same file).
        script_dir: holds script.py and package/ to upload; None runs the built-in step.
        prefix: the SSM parameter prefix.
        progress: draw the sample upload's progress bar (TTY text mode only).

    Returns:
        The parameters written, by short name.
    """
    from dsjob.sample import write_members_csv  # noqa: PLC0415
    from dsjob.storage import Progress  # noqa: PLC0415

    s3, ssm = clients.s3, clients.ssm
    for bucket in (INPUT_BUCKET, OUTPUT_BUCKET, ARTIFACT_BUCKET):
        s3.create_bucket(Bucket=bucket)
    params = {
        "input-bucket": INPUT_BUCKET,
        "output-bucket": OUTPUT_BUCKET,
        "artifact-bucket": ARTIFACT_BUCKET,
        "input-key": INPUT_KEY,
        "output-prefix": "processed/",
        "output-format": "parquet",
        "keep-outputs": "0",
    }
    with tempfile.TemporaryDirectory(prefix="dsjob-seed-") as tmp:
        csv = Path(tmp) / "members.csv"
        LOGGER.info("generating sample input", extra={"rows": rows})
        write_members_csv(csv, rows, seed=random_seed)
        s3.upload_file(
            str(csv),
            INPUT_BUCKET,
            INPUT_KEY,
            Callback=Progress(
                f"seed s3://{INPUT_BUCKET}/{INPUT_KEY}", csv.stat().st_size, enabled=progress
            ),
        )
        if script_dir is not None:
            params.update(_upload_script(clients, script_dir, Path(tmp)))
    stale = [f"{prefix}/{k}" for k in ("script-key", "package-key") if k not in params]
    if stale:  # re-seeding without a script switches back to the built-in step
        ssm.delete_parameters(Names=stale)
    for name, value in params.items():
        ssm.put_parameter(Name=f"{prefix}/{name}", Value=value, Type="String", Overwrite=True)
    LOGGER.info("seeded", extra={"rows": rows, "input": f"s3://{INPUT_BUCKET}/{INPUT_KEY}"})
    return params


def _upload_script(clients: Clients, script_dir: Path, tmp: Path) -> dict[str, str]:
    script = script_dir / "script.py"
    if not script.is_file():
        raise ConfigError(f"--with-script: {script} does not exist")
    clients.s3.upload_file(str(script), ARTIFACT_BUCKET, SCRIPT_KEY)
    params = {"script-key": SCRIPT_KEY}
    from dsjob.pack import find_package_dir  # noqa: PLC0415
    from dsjob.parity import warn_unlocked_imports  # noqa: PLC0415

    warn_unlocked_imports(script)
    package = find_package_dir(script_dir)
    if package is not None:
        from dsjob.pack import build_package  # noqa: PLC0415

        archive = tmp / "package.tar.gz"
        build_package(package, archive)
        clients.s3.upload_file(str(archive), ARTIFACT_BUCKET, PACKAGE_KEY)
        params["package-key"] = PACKAGE_KEY
    return params


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT (`dsjob local serve` keeps the server up until then)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


@dataclass
class Emulator:
    """An emulator this process talks to, with ready clients (see `connect`).

    Attributes:
        endpoint_url: what AWS_ENDPOINT_URL says.
        started: True when this process started the server (and stops it).
        params: the SSM parameters seeded, by short name (empty when reused unseeded).
    """

    endpoint_url: str
    started: bool
    params: dict[str, str] = field(default_factory=dict)
    _server: LocalAws | None = None
    _clients: Clients | None = None

    @property
    def clients(self) -> Clients:
        """The lazily created boto3 clients (`dsjob.aws.Clients`), pointed at the emulator."""
        if self._clients is None:
            from dsjob.aws import Clients  # noqa: PLC0415

            self._clients = Clients()
        return self._clients

    @property
    def s3(self) -> Any:  # noqa: ANN401 - a boto3 client is dynamically typed
        """A boto3 S3 client for the emulator."""
        return self.clients.s3

    @property
    def ssm(self) -> Any:  # noqa: ANN401
        """A boto3 SSM client for the emulator."""
        return self.clients.ssm

    def __str__(self) -> str:
        """How a notebook reports which emulator it uses."""
        how = "started an emulator at" if self.started else "using the emulator at"
        return f"{how} {self.endpoint_url}"

    def stop(self) -> None:
        """Stop the server if this process started it; a reused one keeps running."""
        if self._server is not None:
            self._server.stop()
            self._server = None
            os.environ.pop("AWS_ENDPOINT_URL", None)

    def __enter__(self) -> Self:
        """Use as a context manager: stopped on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the server (if started here)."""
        self.stop()


def connect(
    *,
    rows: int = 1228,
    random_seed: int = 7,
    script_dir: Path | None = None,
    reuse: bool = True,
) -> Emulator:
    """The emulator named by AWS_ENDPOINT_URL, or a new seeded one in this process.

    Either way this process's environment points boto3 at it with dummy
    credentials, so `dsjob.run(...)` and plain `boto3.client(...)` use it too.

    Args:
        rows: sample rows to seed (a new emulator only).
        random_seed: seed of the sample data.
        script_dir: also upload DIR/script.py and its package (a new emulator only).
        reuse: use AWS_ENDPOINT_URL when set (False: always start a new one).
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if reuse and endpoint:
        for name, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        return Emulator(endpoint, started=False)
    server = start()
    emulator = Emulator(server.endpoint_url, started=True, _server=server)
    try:
        emulator.params = seed(
            emulator.clients, rows=rows, random_seed=random_seed, script_dir=script_dir
        )
    except BaseException:
        server.stop()
        raise
    return emulator
