"""`modelserve logsink --out FILE.jsonl [--host 127.0.0.1] [--port 8090]`: a sink for payload
logging to look at (`gateway.logsink`). Point a component's `logger.url` at it; it appends
every CloudEvent to FILE as one JSON line and serves the recent ones at `/events` (the
dashboard shows them). Stops on Ctrl-C / SIGTERM, after the events in flight are written.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    from gateway.logsink import LogSinkSettings

__all__ = ["add_logsink_parser", "cmd_logsink"]

STOP_GRACE_S = 5.0


def _error(message: str) -> int:
    print(f"modelserve: error: {message}", file=sys.stderr, flush=True)
    return 1


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _serve(settings: LogSinkSettings) -> int:
    from gateway.logsink import LogSink

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sink = LogSink(settings)
    await sink.start()
    try:
        print(
            f"modelserve logsink: listening on {sink.url}, appending CloudEvents to "
            f"{settings.out} (POST any path; GET /events, /healthz, /metrics; Ctrl-C to stop)",
            flush=True,
        )
        if not _is_loopback(settings.host):
            print(
                f"modelserve logsink: warning: {settings.host} is not loopback and the sink has "
                "no authentication: whoever reaches it can write events and read /events",
                file=sys.stderr, flush=True,
            )
        await stop.wait()
        return 0
    finally:
        print("modelserve logsink: stopping", flush=True)
        await sink.stop(STOP_GRACE_S)


def cmd_logsink(args: argparse.Namespace) -> int:
    """`modelserve logsink`: 0 after Ctrl-C / SIGTERM, 1 when it could not start."""
    from gateway.logsink import LogSinkSettings

    given = {"out": args.out, "host": args.host, "port": args.port,
             "keep_per_service": args.keep}
    try:
        settings = LogSinkSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        return _error(f"log sink settings (flags, MODELSERVE_LOGSINK_*): {exc}")
    try:
        return asyncio.run(_serve(settings))
    except OSError as exc:
        return _error(str(exc))


def add_logsink_parser(commands: argparse._SubParsersAction) -> None:
    """The `logsink` subcommand and its flags."""
    sink = commands.add_parser(
        "logsink",
        help="receive payload-logging CloudEvents and append them to a JSON-lines file",
        description="A sink for a component's `logger.url`: each CloudEvent (binary or "
        "structured mode) becomes one JSON line of FILE (the CloudEvents JSON format); the last "
        "ones per InferenceService are served at GET /events for the dashboard.",
    )
    sink.add_argument("--out", type=Path, required=True, metavar="FILE",
                      help="the JSON-lines file to append to (created if missing)")
    sink.add_argument("--host", default=None,
                      help="the address to listen on (default 127.0.0.1; the sink has no auth)")
    sink.add_argument("--port", type=int, default=None, help="the port (default 8090; 0: any)")
    sink.add_argument("--keep", type=int, default=None, metavar="N",
                      help="events kept in memory per InferenceService for /events (default 100)")
    sink.set_defaults(func=cmd_logsink)
