"""A trio event loop on a background thread, callable from plain threads and asyncio.

py-libp2p runs only under trio. pcomm users call from ordinary threads or asyncio, so
the node lives on one daemon thread and work is handed to it as coroutines:
``submit`` returns a ``concurrent.futures.Future``; ``call`` waits for it (in short
slices, so Ctrl-C works); ``acall`` awaits it from asyncio. Every call has a deadline,
enforced inside trio (the coroutine is cancelled, not abandoned).

py-libp2p reports failures as nested exception groups; ``leaf_error`` digs out the
first real exception so users see one clear error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Awaitable, Callable

import trio

from ..errors import DiscoveryError, InvalidArgumentError, PcommError, TimeoutError

log = logging.getLogger("pcomm.discovery")

kSlice = 0.1  # seconds between Ctrl-C checks in call()


def leaf_error(error: BaseException) -> BaseException:
    """The first non-group exception inside (possibly nested) exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def has_cancelled(error: BaseException) -> bool:
    """True if ``error`` is, or a (nested) exception group holds, trio.Cancelled."""
    if isinstance(error, BaseExceptionGroup):
        return any(has_cancelled(e) for e in error.exceptions)
    return isinstance(error, trio.Cancelled)


def as_pcomm_error(error: BaseException, what: str) -> BaseException:
    leaf = leaf_error(error)
    if isinstance(leaf, (PcommError, KeyboardInterrupt, SystemExit)):
        return leaf
    return DiscoveryError(f"{what}: {type(leaf).__name__}: {leaf}")


class TrioThread:
    """Owns one trio loop on a daemon thread until ``stop()``."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    def start(self, main: Callable[[trio.Nursery], Awaitable[None]], timeout: float) -> None:
        """Runs ``main(nursery)`` on the new loop; returns once it has returned."""
        if self._thread is not None:
            raise InvalidArgumentError("this discovery node was started already (a closed node cannot restart: make a new one)")

        async def root() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    with trio.fail_after(timeout):
                        await main(nursery)
                    self._started.set()
                    await self._stop.wait()
                    nursery.cancel_scope.cancel()
            except BaseException as e:  # reported to start()'s caller, or logged here
                self._failure = e
                if self._started.is_set():
                    log.error("discovery node stopped by an error: %r", leaf_error(e))
            finally:
                self._started.set()

        self._thread = threading.Thread(target=trio.run, args=(root,), name=self._name, daemon=True)
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            self._thread.join(5)
            failure = leaf_error(self._failure)
            if isinstance(failure, trio.TooSlowError):
                raise TimeoutError(f"discovery node did not start within {timeout} s")
            raise as_pcomm_error(failure, "discovery node failed to start") from None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float, what: str) -> concurrent.futures.Future:
        """Schedules ``fn(*args)`` on the loop with a deadline of ``timeout`` seconds."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self._thread is None:
            future.set_exception(InvalidArgumentError(f"{what}: the discovery node is not started (call start())"))
            return future
        if not self.running or self._token is None:
            future.set_exception(DiscoveryError(f"{what}: the discovery node is closed"))
            return future

        async def task() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                with trio.fail_after(timeout):
                    result = await fn(*args)
            except trio.TooSlowError:
                future.set_exception(TimeoutError(f"{what}: no answer within {timeout} s"))
            except BaseException as e:  # noqa: BLE001 - every failure goes to the caller
                if isinstance(leaf_error(e), trio.Cancelled):
                    future.set_exception(DiscoveryError(f"{what}: the discovery node closed during the call"))
                    raise
                future.set_exception(as_pcomm_error(e, what))
            else:
                future.set_result(result)

        def spawn() -> None:
            try:
                assert self._nursery is not None
                self._nursery.start_soon(task)
            except RuntimeError:  # the loop is shutting down: the nursery takes no tasks
                future.set_exception(DiscoveryError(f"{what}: the discovery node is closed"))

        try:
            self._token.run_sync_soon(spawn)
        except trio.RunFinishedError:
            future.set_exception(DiscoveryError(f"{what}: the discovery node is closed"))
        return future

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Starts a background task on the loop; call from the loop's own thread. The
        task lives until it returns, its caller cancels it, or the node stops."""
        assert self._nursery is not None and self._thread is threading.current_thread()
        self._nursery.start_soon(fn, *args)

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float, what: str) -> Any:
        if self._thread is threading.current_thread():
            raise InvalidArgumentError(f"{what}: a blocking call from the discovery node's own thread would never return")
        future = self.submit(fn, *args, timeout=timeout, what=what)
        # The deadline is enforced inside trio; wait in slices so Ctrl-C works, and never
        # with future.result(timeout): its TimeoutError is the builtin one, which
        # pcomm's own TimeoutError (the call's real outcome) derives from.
        while not concurrent.futures.wait([future], kSlice).done:
            if not self.running and not future.done():
                raise DiscoveryError(f"{what}: the discovery node stopped")
        return future.result()

    async def acall(self, fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float, what: str) -> Any:
        return await asyncio.wrap_future(self.submit(fn, *args, timeout=timeout, what=what))

    def stop(self, timeout: float = 5.0) -> None:
        if self._token is None or not self.running:
            return
        stop = self._stop
        try:
            self._token.run_sync_soon(lambda: stop.set() if stop is not None else None)
        except trio.RunFinishedError:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
