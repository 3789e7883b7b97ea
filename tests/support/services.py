"""A beatbus service (``runtime.Service``) run in the test's process, on a thread of its own."""
from __future__ import annotations

import contextlib
import threading

__all__ = ["running"]


@contextlib.contextmanager
def running(service):
    """Run ``service`` until the block ends; it must start within 10 s and stop cleanly without an error."""
    stop = threading.Event()
    t = threading.Thread(target=service.run, args=(stop,), daemon=True)
    t.start()
    assert service.ready.wait(10), service.error
    try:
        yield service
    finally:
        stop.set()
        t.join(15)
        assert not t.is_alive()
        assert service.error is None, service.error
