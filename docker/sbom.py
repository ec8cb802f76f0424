# ruff: noqa: INP001
"""Write the image's CycloneDX SBOM: its venv, its Debian packages and its base image.

    python sbom.py --venv /opt/venv --lock LOCK --base-image REF --name NAME -o OUT

Runs inside an image build with the builder's cyclonedx-python-lib venv (its own hashed
lock, requirements-sbom.lock) and the image's interpreter. Every distribution in the
venv becomes a `pkg:pypi` component with its version and the sha256 hashes its lock
pins; every installed Debian package a `pkg:deb` component; the base image a container
component. The document is validated against the schema the library ships before it is
written, so an image never carries an invalid SBOM.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import sysconfig
import warnings
from importlib import metadata
from pathlib import Path

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def norm(name: str) -> str:
    """PEP 503 normalised name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_hashes(lock: Path) -> dict[tuple[str, str], list[str]]:
    """(name, version) -> the sha256 hashes the lock allows for that pin."""
    hashes: dict[tuple[str, str], list[str]] = {}
    current: tuple[str, str] | None = None
    for line in lock.read_text(encoding="utf-8").splitlines():
        pin = _PIN.match(line)
        if pin:
            current = (norm(pin.group(1)), pin.group(2))
            hashes.setdefault(current, [])
        if current is not None:
            hashes[current].extend(_HASH.findall(line))
    return hashes


def python_components(venv: Path, lock: Path) -> list[Component]:
    """One component per distribution installed in the venv."""
    site = sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"]
    pinned = lock_hashes(lock)
    components = []
    for dist in sorted(metadata.distributions(path=[site]), key=lambda d: norm(d.name)):
        name, version = norm(dist.name), dist.version
        hashes = pinned.get((name, version), [])
        components.append(
            Component(
                type=ComponentType.LIBRARY,
                name=name,
                version=version,
                bom_ref=f"pypi:{name}@{version}",
                purl=PackageURL(type="pypi", name=name, version=version),
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=h) for h in hashes],
                properties=[Property(name="dsjob:lock", value=lock.name if hashes else "none")],
            )
        )
    return components


def debian_components() -> list[Component]:
    """One component per installed Debian package (dpkg's own database)."""
    out = subprocess.run(
        [
            "dpkg-query",
            "-W",
            "-f",
            r"${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    components = []
    for line in out.splitlines():
        status, name, version, arch = line.split("\t")
        if not status.startswith("ii"):
            continue
        components.append(
            Component(
                type=ComponentType.LIBRARY,
                name=name,
                version=version,
                bom_ref=f"deb:{name}@{version}",
                purl=PackageURL(
                    type="deb",
                    namespace="debian",
                    name=name,
                    version=version,
                    qualifiers={"arch": arch},
                ),
            )
        )
    return components


def base_component(reference: str) -> Component:
    """The image the build started from, as the build named it (digest included if pinned)."""
    name, _, digest = reference.partition("@")
    return Component(
        type=ComponentType.CONTAINER,
        name=name,
        version=digest or None,
        bom_ref="base-image",
        properties=[
            Property(name="dsjob:role", value="base-image"),
            Property(name="dsjob:reference", value=reference),
        ],
    )


def build(args: argparse.Namespace) -> str:
    """The validated SBOM as JSON text."""
    # The library asks for a dependency graph under the root; an image has no single
    # "direct dependency" set worth claiming, so the SBOM lists components only.
    warnings.filterwarnings("ignore", message=".*has no defined dependencies.*")
    bom = Bom()
    bom.metadata.component = Component(
        type=ComponentType.APPLICATION, name=args.name, bom_ref="image", version=args.version
    )
    bom.components.add(base_component(args.base_image))
    for component in python_components(args.venv, args.lock) + debian_components():
        bom.components.add(component)
    text = JsonV1Dot6(bom).output_as_string(indent=1)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        sys.exit(f"sbom.py: the SBOM does not validate: {error}")
    return text


def main() -> None:
    """Parse the arguments and write the SBOM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--base-image", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", default=None)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(build(args) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
