"""Real servers for the scale-out tests: PostgreSQL, SeaweedFS (S3) and Redis on free ports.

Outside CI a machine without the server programs skips these tests; with `CI` set they must run
(`.ci/run` installs the Debian packages), so a missing server fails instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from lora_assets_tests.scale.servers import Stack, missing_servers


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    missing = missing_servers()
    if missing:
        message = f"scale-out servers missing: {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with Stack() as servers:
        yield servers


@pytest.fixture
def s3_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process (and its children) reach the S3 server the way every deployment does: through
    the standard AWS environment variables."""
    env = stack.s3.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_root(stack: Stack, s3_env: dict[str, str], tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh data root URL in the test bucket, and a scratch folder of its own."""
    monkeypatch.setenv("LORA_ASSETS_SCRATCH", str(tmp_path / "scratch"))
    return f"s3://{stack.s3.bucket}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Servers, two CPU workers here, a GPU worker in its own network namespace (see cluster.py)."""
    from lora_assets_tests.scale.cluster import Cluster
    from lora_assets_tests.scale.multi_host import require_netns

    require_netns()
    if missing_servers():
        pytest.fail(f"scale-out servers missing: {', '.join(missing_servers())}")
    with Cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running
