"""SIGTERM and SIGINT as the app sees them: streamed subscriptions end at once.

uvicorn closes WebSockets itself when told to stop, but it lets HTTP responses in flight run
until its graceful-shutdown timeout, and runs the app's lifespan shutdown only after them: a
server-sent event stream would hold the exit for that long. uvicorn installs its handlers with
`signal.signal` before the lifespan starts (restoring the previous ones when it exits), so a
handler installed here runs its callback and then uvicorn's.
"""

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def on_termination(callback: Callable[[], None]) -> Iterator[None]:
    """Within this block, a termination signal calls `callback` on the running loop, then the
    handler it replaced. Nothing happens outside the main thread (tests serve in threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    replaced: dict[int, Any] = {}

    def handle(number: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        previous = replaced.get(number)
        if callable(previous):
            previous(number, frame)

    for sig in SIGNALS:
        replaced[sig] = signal.signal(sig, handle)
    try:
        yield
    finally:
        for number, previous in replaced.items():
            if signal.getsignal(number) is handle:
                signal.signal(number, previous)
