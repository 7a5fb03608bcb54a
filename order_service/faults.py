"""Kill points for the fault tests (tests/test_chaos.py); inert unless a test sets
``ORDERBUS_TEST_KILL_AT``.

Some crashes matter only at one exact moment (after the broker acknowledged a message
and before the database records it; after an order committed and before the client
got the answer) and cannot be timed from outside. With
``ORDERBUS_TEST_KILL_AT=<point>:<n>`` the process kills itself with SIGKILL (no
cleanup, no flush: as ``kill -9``) the n-th time it reaches ``<point>``.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "ORDERBUS_TEST_KILL_AT"
_passes: dict[str, int] = {}
# Read once: the variable is set before the process starts (the hot paths pass a kill point
# with every order, and reading the environment each time was a measurable part of it).
_POINT, _, _NTH = os.environ.get(VARIABLE, "").partition(":")


def kill_point(name: str) -> None:
    if name != _POINT:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(_NTH or 1):
        os.kill(os.getpid(), signal.SIGKILL)
