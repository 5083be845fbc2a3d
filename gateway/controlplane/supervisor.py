"""Run one component as a supervised OS process: start, readiness, restarts, stop.

The process gets its own process group (so the workers kserve forks die with it) and, on Linux,
PR_SET_PDEATHSIG so it dies when `modelserve up` is killed outright. Its output is read
continuously (a full pipe would block the child) and written line by line with the component's
name in front. An unexpected exit is followed by a restart with exponential backoff, as a
kubelet restarts a crashed container; every state change is reported through `on_change`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import enum
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TextIO

import httpx

from gateway.controlplane.components import LaunchPlan

__all__ = ["ComponentState", "StartupError", "Supervisor", "die_with_parent"]

PR_SET_PDEATHSIG = 1
TAIL_LINES = 40


class ComponentState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    STOPPED = "stopped"


class StartupError(RuntimeError):
    """A component exited or never became ready; the message holds its last output lines."""


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class Supervisor:
    """Keeps one component's process running and says when it is ready."""

    def __init__(
        self,
        plan: LaunchPlan,
        on_change: Callable[[Supervisor], None] = lambda _s: None,
        *,
        output: TextIO | None = None,
        ready_timeout: float = 120.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
        stop_grace: float = 10.0,
        poll_interval: float = 0.1,
    ) -> None:
        self.plan = plan
        self.on_change = on_change
        self.output = output if output is not None else sys.stdout
        self.ready_timeout = ready_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.stop_grace = stop_grace
        self.poll_interval = poll_interval
        self.state = ComponentState.STOPPED
        self.message = "not started"
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._stopping = False

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def pid(self) -> int | None:
        """The process id (also its process group id), None when not running."""
        if self._process is None or self._process.returncode is not None:
            return None
        return self._process.pid

    @property
    def ready(self) -> bool:
        return self.state is ComponentState.READY

    def _set(self, state: ComponentState, message: str) -> None:
        self.state, self.message = state, message
        self.on_change(self)

    async def start(self) -> None:
        """Launch the process and wait until it is ready; then keep it running."""
        self._stopping = False
        self._set(ComponentState.STARTING, f"{self.plan.component} starting")
        try:
            await self._launch_until_ready()
        except BaseException:
            await self._terminate()
            self._set(ComponentState.STOPPED, f"{self.plan.component} failed to start")
            raise
        self._set(ComponentState.READY, "")
        self._watcher = asyncio.create_task(self._watch(), name=f"watch {self.name}")

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period; no restarts after."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._terminate()
        self._set(ComponentState.STOPPED, f"{self.plan.component} stopped")

    async def _spawn(self) -> asyncio.subprocess.Process:
        self._tail.clear()
        process = await asyncio.create_subprocess_exec(
            *self.plan.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.plan.env,
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()),
        )
        self._process = process
        assert process.stdout is not None
        self._pump = asyncio.create_task(self._copy_output(process.stdout), name=f"log {self.name}")
        return process

    async def _copy_output(self, stream: asyncio.StreamReader) -> None:
        prefix = f"[{self.name}] "
        pending = b""
        while chunk := await stream.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            self._write(prefix, lines)
        if pending:
            self._write(prefix, [pending])

    def _write(self, prefix: str, lines: list[bytes]) -> None:
        if not lines:
            return
        text = [line.decode(errors="replace").rstrip("\r") for line in lines]
        self._tail.extend(text)
        with contextlib.suppress(OSError, ValueError):
            self.output.write("".join(f"{prefix}{line}\n" for line in text))
            self.output.flush()

    def _last_output(self) -> str:
        return "\n".join(f"  {line}" for line in self._tail) or "  (no output)"

    async def _launch_until_ready(self) -> None:
        process = await self._spawn()
        deadline = time.monotonic() + self.ready_timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                if process.returncode is not None:
                    await self._drain_output()
                    raise StartupError(
                        f"{self.name} exited with code {process.returncode} before it was ready "
                        f"({' '.join(self.plan.argv)}); last output:\n{self._last_output()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.plan.ready_url)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise StartupError(
                        f"{self.name} not ready at {self.plan.ready_url} after "
                        f"{self.ready_timeout:g} s; last output:\n{self._last_output()}"
                    )
                await asyncio.sleep(self.poll_interval)

    async def _drain_output(self) -> None:
        if self._pump is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._pump, 2.0)

    async def _watch(self) -> None:
        """Restart the process with exponential backoff whenever it exits on its own."""
        delay = self.backoff_initial
        up_since = time.monotonic()
        while not self._stopping:
            assert self._process is not None
            code: int | None = await self._process.wait()
            await self._drain_output()
            self._kill_group()  # workers left behind by the dead leader
            if time.monotonic() - up_since >= self.stable_after:
                delay = self.backoff_initial
            while not self._stopping:
                self.restarts += 1
                self._set(
                    ComponentState.RESTARTING,
                    (f"{self.plan.component} exited with code {code}, restarting in {delay:.1f} s"),
                )
                self._write(f"[{self.name}] ", [self.message.encode()])
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                try:
                    await self._launch_until_ready()
                except StartupError as exc:
                    await self._terminate()
                    code = self._process.returncode if self._process else None
                    self._write(f"[{self.name}] ", [str(exc).splitlines()[0].encode()])
                    continue
                up_since = time.monotonic()
                self._set(ComponentState.READY, "")
                self._write(f"[{self.name}] ", [f"{self.plan.component} ready again".encode()])
                break

    def _kill_group(self, sig: int = signal.SIGKILL) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, sig)

    async def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            self._kill_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.stop_grace)
            except TimeoutError:
                self._kill_group(signal.SIGKILL)
                await process.wait()
        self._kill_group(signal.SIGKILL)  # anything of the group still alive
        await self._drain_output()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
