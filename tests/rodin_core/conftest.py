"""Every core test runs torch on one thread (the ``one_torch_thread`` fixture of tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _core_tests_use_one_thread(one_torch_thread: None) -> None:
    """Applies ``one_torch_thread`` to every test under tests/rodin_core."""
