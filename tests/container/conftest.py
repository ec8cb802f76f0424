"""Container fixtures: the engine, and the dev and prod images, each built once per session.

`engine` fails (not skips) when DSJOB_REQUIRE_ENGINE=1 and no engine works. `prod_image`
and `dev_image` build through scripts/build-ml-container.sh from a clean layer cache
(`--no-cache`; set CONTAINER_BUILD_CACHE=1 locally to reuse layers) on BASE_IMAGE (env, else
.cache/ci.env from scripts/ci/setup-base-image.sh, else config/versions.conf), and are
tagged ds-preprocessing:prod / ds-preprocessing:dev like `make ml-build*` does. They are
`imagekit.BuiltImage` objects: `.ref` (versioned tag), `.tag` (moving tag), `.log`, `.size`.

Each image is built the first time a test needs it, one after the other: on 2 cores two
clean builds at once took longer than the two in a row (imagekit.COLD_BUILD_S). Every
test that needs an image gets a pytest timeout that covers the build on top of its own,
so a slow machine fails the build's own timeout with its log, not the test's.
"""

from __future__ import annotations

import os

import pytest

from .imagekit import BUILD_TIMEOUT_S, BuiltImage, Engine, build_image, detect_engine

# Fixtures that (may) build an image in their setup.
_BUILDING = {"prod_image", "dev_image", "lambda_image"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test whose setup may build images the build's time on top of its own."""
    for item in items:
        if _BUILDING & set(getattr(item, "fixturenames", ())):
            own = item.get_closest_marker("timeout")
            seconds = float(own.args[0]) if own and own.args else 600.0
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S + seconds), append=False)


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The container engine: none working fails under DSJOB_REQUIRE_ENGINE=1, else skips."""
    command, why = detect_engine()
    if command is None:
        message = f"no working container engine ({why})"
        if os.environ.get("DSJOB_REQUIRE_ENGINE") == "1":
            pytest.fail(f"{message} and DSJOB_REQUIRE_ENGINE=1", pytrace=False)
        pytest.skip(f"{message}; run scripts/ci/setup-container-engine.sh")
    return Engine(command)


def _clean_build() -> bool:
    # Not DSJOB_*: the suite's autouse fixture clears those for every test.
    return os.environ.get("CONTAINER_BUILD_CACHE") != "1"


@pytest.fixture(scope="session")
def prod_image(engine: Engine) -> BuiltImage:
    """The production image, built once per session from a clean layer cache."""
    return build_image(engine, "--target", "production", no_cache=_clean_build())


@pytest.fixture(scope="session")
def dev_image(engine: Engine) -> BuiltImage:
    """The (full) dev image, built once per session from a clean layer cache."""
    return build_image(engine, "--target", "dev", no_cache=_clean_build())
