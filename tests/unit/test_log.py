"""Log lines go to the stderr of the moment: a swapped and closed stderr never breaks logging."""
from __future__ import annotations

import contextlib
import io
import logging

import orjson

from beatbus.log import get_logger, setup_logging


def test_logging_follows_stderr_after_the_one_it_was_set_up_with_closed():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        first, second = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(first):
            setup_logging(fmt="json")
            get_logger("t").info("one", extra={"k": 1})
        first.close()                       # as pytest closes a finished test's capture
        with contextlib.redirect_stderr(second):
            get_logger("t").info("two")
        assert orjson.loads(second.getvalue()) | {"ts": 0} == {"ts": 0, "level": "info", "logger": "beatbus.t",
                                                              "msg": "two"}
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
