"""A per-test deadline (``pytest -p pytest_deadline --deadline 120``) for the ``wide`` tier of
``gpu_check.sh`` where pytest-timeout is not installed (the CPU rehearsal on CI; the lent GPU
machines have pytest-timeout, which the tier uses there).

SIGALRM around each test's call phase turns an overrun into a failure of that test, and the run
goes on. A kernel that hangs inside one C call does not return to Python, so the tier's own
time limit remains the backstop. POSIX only; on other systems it does nothing.
"""
from __future__ import annotations

import signal

import pytest


class DeadlineExceeded(Exception):
    """A test ran longer than --deadline seconds."""


def pytest_addoption(parser):
    parser.addoption("--deadline", type=float, default=0.0,
                     help="fail a test whose call phase runs longer than this many seconds (0: no limit)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    seconds = item.config.getoption("--deadline")
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise DeadlineExceeded(f"{item.nodeid} exceeded --deadline {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
