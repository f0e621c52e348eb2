"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from .s3_server import INSTALL_HINT, find_weed_binary, start_seaweedfs


@pytest.fixture(scope="session")
def s3_store_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    """A real S3 server (SeaweedFS on loopback) for the session: yields ``(uri_prefix, storage_options)``.

    ``uri_prefix`` is ``s3://<bucket>``; tests add a unique folder under it. Fails (never skips)
    when the ``weed`` binary is missing, since the S3 path is part of the contract under test.
    """
    if find_weed_binary() is None:
        pytest.fail(f"SeaweedFS `weed` binary not found; {INSTALL_HINT}", pytrace=False)
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield f"s3://{server.bucket}", server.storage_options
    finally:
        server.stop()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the test, as one Ray worker per core runs it: the tensors of unit tests are
    small, and two-thread torch slows down badly (up to 80x measured) when another process shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
