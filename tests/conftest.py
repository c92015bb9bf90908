"""Shared test settings."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    # The tests train tiny models: one thread is as fast as two, does not fight over a busy
    # machine's cores, and fixes the order of floating-point reductions, so trained models (and
    # the comparisons the tests assert) are the same on every machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
