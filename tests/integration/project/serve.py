"""Runs one ASGI server for the integration tests, then reports what it left.

    python serve.py {uvicorn|uvicorn-reset-contextvars|daphne} MODULE:APP STATE_DIR

Binds a listening socket on 127.0.0.1 with a port the kernel picks, hands it
to the server, and writes the port to STATE_DIR/port once listening. When the
server stops (SIGINT or SIGTERM), writes the threads still running to
STATE_DIR/threads.json: a clean shutdown leaves none.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _persistent_threads() -> set[threading.Thread]:
    """Threads that outlive a server by design: the process-wide worker pools."""
    from asgiref.sync import SyncToAsync

    keep = {threading.main_thread()}
    executor = getattr(SyncToAsync, "single_thread_executor", None)
    keep.update(getattr(executor, "_threads", ()))
    # asgire parks a bounded number of idle event-loop threads for reuse.
    keep.update(t for t in threading.enumerate() if t.name.startswith("asgire-"))
    return keep


def _threads_left() -> list[str]:
    deadline = time.monotonic() + 5.0
    while True:
        gc.collect()
        left = set(threading.enumerate()) - _persistent_threads()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    frames = sys._current_frames()
    for thread in left:
        # Where each leftover thread is stuck, for the test's failure message.
        stack = (
            "".join(traceback.format_stack(frames[thread.ident]))
            if thread.ident in frames
            else ""
        )
        print(f"thread left running: {thread.name}\n{stack}", file=sys.stderr)
    return sorted(f"{t.name} (daemon={t.daemon})" for t in left)


def _listening_socket() -> socket.socket:
    # IPPROTO_TCP named: asyncio turns Nagle's algorithm off (TCP_NODELAY) only
    # on sockets whose protocol says TCP, and accepted ones inherit it. With
    # proto 0, each response waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _announce_when_listening(sock: socket.socket, state: Path) -> None:
    # The socket already accepts connections into its backlog; the tests only
    # need the port, and they wait for a first response anyway.
    _write_atomically(state / "port", str(sock.getsockname()[1]))


def serve_uvicorn(
    app: str, sock: socket.socket, state: Path, *, reset_contextvars: bool = False
) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=10,
        reset_contextvars=reset_contextvars,
    )
    _announce_when_listening(sock, state)
    # After a graceful stop uvicorn re-raises the signal that stopped it.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])


def serve_daphne(app: str, sock: socket.socket, state: Path) -> None:
    # Twisted adopts a listening socket only the systemd way: descriptor 3
    # onwards, announced in the environment before Twisted is imported.
    systemd_first_fd = 3
    if sock.fileno() != systemd_first_fd:
        os.dup2(sock.fileno(), systemd_first_fd)
    os.environ.update(
        LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="http"
    )
    from daphne.cli import CommandLineInterface

    _announce_when_listening(sock, state)
    CommandLineInterface().run(
        [
            "--endpoint",
            "systemd:domain=INET:name=http",
            "--application-close-timeout",
            "10",
            "--verbosity",
            "0",
            app,
        ]
    )
    # asyncio.run would now shut the loop's default executor down (Django logs
    # errors through it); under Twisted's reactor that is left to us.
    from twisted.internet import reactor

    loop = reactor._asyncioEventloop  # type: ignore[attr-defined]
    loop.run_until_complete(loop.shutdown_default_executor())


def main() -> None:
    kind, app, state_dir = sys.argv[1:]
    state = Path(state_dir)
    sock = _listening_socket()
    if kind == "uvicorn-reset-contextvars":
        serve_uvicorn(app, sock, state, reset_contextvars=True)
    else:
        {"uvicorn": serve_uvicorn, "daphne": serve_daphne}[kind](app, sock, state)
    _write_atomically(state / "threads.json", json.dumps(_threads_left()))


if __name__ == "__main__":
    main()
