"""Pure Python work done in a forked copy of this process while this one does other work: a second
core for what would otherwise wait its turn under the GIL.

The child starts with everything this process holds (shared copy-on-write: nothing is sent to it),
and sends its result back pickled over a socket pair, with the open files it names passed as
descriptors: a finding log's runs come back without being copied. Where the child fails or cannot
be started, `Failed` says so and the caller does the work itself: the child only ever computes.
`Shares` splits one piece of work between the two as they go, whichever is free taking the next share.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import socket
import struct
from collections.abc import Callable, Iterator
from typing import IO

_LENGTH = struct.Struct("<Q")
_MAX_FILES = 1024  # a log's runs: a few per tier of its merge sort


class Failed(Exception):
    """The child could not be started, or ended without a result."""


class Aside:
    """One child's work under way; `result` waits for it. As a context manager, a child still running
    on the way out (an error, a Ctrl-C) is stopped and reaped."""

    __slots__ = ("pid", "channel")

    def __init__(self, work: Callable[[], tuple[object, list[IO[bytes]]]]) -> None:
        """`work` returns the result and the open files it names (sent as descriptors)."""
        try:
            ours, theirs = socket.socketpair()
        except OSError as error:
            raise Failed(f"no socket pair: {error.strerror}") from None
        # Ctrl-C held across the fork: it reaches the whole process group, and only this process acts on it
        # (a child caught before it ignores SIGINT would unwind this process's stack as its own).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pid = os.fork()
        except OSError as error:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            ours.close()
            theirs.close()
            raise Failed(f"cannot fork: {error.strerror}") from None
        if pid == 0:  # the child: compute, send, and leave without running any of the parent's clean-up
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                gc.disable()  # a collection would touch, and so copy, the whole inherited heap
                ours.close()
                result, files = work()
                data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
                socket.send_fds(theirs, [_LENGTH.pack(len(data))], [file.fileno() for file in files])
                theirs.sendall(data)
                code = 0
            except BaseException:  # noqa: BLE001 - the parent does the work again and sees any error itself
                pass
            finally:
                os._exit(code)
        theirs.close()
        self.pid: int | None = pid
        self.channel = ours
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a Ctrl-C held meanwhile is raised here
        except BaseException:
            self.close()
            raise

    def result(self) -> tuple[object, list[IO[bytes]]]:
        """The child's result and its files (open, read-only to the caller as it likes); `Failed` when
        there is none."""
        files: list[IO[bytes]] = []
        try:
            try:
                header, descriptors, flags, _ = socket.recv_fds(self.channel, _LENGTH.size, _MAX_FILES)
            except OSError as error:
                raise Failed(f"no result from the child: {error.strerror}") from None
            files = [os.fdopen(descriptor, "rb", buffering=0) for descriptor in descriptors]
            if len(header) != _LENGTH.size or flags & socket.MSG_CTRUNC:
                raise Failed("the child ended without a result")
            (length,) = _LENGTH.unpack(header)
            data = bytearray(length)
            view, got = memoryview(data), 0
            while got < length:
                try:
                    received = self.channel.recv_into(view[got:])
                except OSError as error:
                    raise Failed(f"the child's result was cut short: {error.strerror}") from None
                if not received:
                    raise Failed("the child's result was cut short")
                got += received
            if self._reap() != 0:
                raise Failed("the child failed")
            return pickle.loads(data), files
        except BaseException:
            for file in files:
                file.close()
            raise
        finally:
            self.close()

    def _reap(self) -> int:
        pid, self.pid = self.pid, None
        if pid is None:
            return 0
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap()
        self.channel.close()

    def __enter__(self) -> Aside:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Shares:
    """A piece of work in `count` shares, for this process and a child forked after: the child takes
    them from the front, this process from the back, each share going to one of them, and whichever is
    free takes the next. A pipe holds one byte a share and a read of one byte takes one (the kernel
    hands each byte to one reader): neither waits on a lock or on the other."""

    LIMIT = 4096  # shares: what one write puts in a pipe whole (PIPE_BUF), none of it waiting on a reader

    __slots__ = ("count", "_pipe")

    def __init__(self, count: int) -> None:
        if not 0 < count <= self.LIMIT:
            raise ValueError(f"shares: {count} is not between 1 and {self.LIMIT}")
        try:
            read, write = os.pipe()
        except OSError as error:
            raise Failed(f"no pipe: {error.strerror}") from None
        try:
            os.write(write, bytes(count))
        finally:
            os.close(write)  # once the shares are gone, a read finds the end
        self.count = count
        self._pipe: int | None = read

    def _take(self) -> bool:
        assert self._pipe is not None
        return bool(os.read(self._pipe, 1))

    def from_front(self) -> Iterator[int]:
        """The child's: the shares' indexes it takes, from the first on."""
        taken = 0
        while self._take():
            yield taken
            taken += 1

    def from_back(self) -> Iterator[int]:
        """This process's: the shares' indexes it takes, from the last down."""
        index = self.count - 1
        while self._take():
            yield index
            index -= 1

    def close(self) -> None:
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None

    def __enter__(self) -> Shares:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
