"""Core tests run torch on one thread, as one Ray worker per core does: their tensors are small, and
two-thread torch slows down badly (up to 80x measured) when another process shares the cores."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
