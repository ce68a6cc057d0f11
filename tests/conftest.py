import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run tests marked slow, and the long property tests")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: heavy statistical test, run with --slow")
    if config.getoption("--slow"):
        os.environ["RELAXIT_SLOW_TESTS"] = "1"  # read by hypothesis tests to draw more examples


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
