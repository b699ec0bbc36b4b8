"""Three listeners, one process, one event loop: the Unix socket (full API), each user's socket and TCP
(read-only).

All are uvicorn servers on sockets bound here, so permissions are set before anyone can connect and
port 0 works (the bound port is logged and written to <run_dir>/inference.port). The Unix server runs
the lifespan; the others start after it is up and stop first. uvicorn's own signal capture is
replaced by one handler that stops all three. Started as root, the process binds, writes the port file,
then becomes inference.run_as before anything else (inference/runas.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import signal
import socket
import sys
from collections.abc import Generator
from pathlib import Path

import uvicorn

import inference
from inference import runas
from inference.access import PeerCredProtocol, tcp_guard, user_socket_guard
from inference.app import create_app
from inference.service import DB_NAME
from memo import helpers, notify
from memo.config import Config

log = logging.getLogger(__name__)


TICK_S = 1.0
"""How often each listener's loop wakes while idle (uvicorn's own: 10 times a second, for a date header
it refreshes once a second): three listeners were 30 wakeups a second of an idle service."""


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are handled once for all servers in serve()

    def exit(self) -> None:
        self.should_exit = True
        self._exit.set()

    async def main_loop(self) -> None:
        """uvicorn's loop (on_tick: the date header, should_exit) at one tick a second, each tick
        counted as ten of its own; exit() ends the wait at once."""
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), TICK_S)
            should_exit = await self.on_tick(counter)


def bind_unix(path: Path, mode: int, group: str | None) -> socket.socket:
    """A listening Unix socket at ``path`` with ``mode`` and ``group`` (if given and it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # never world-accessible, not even between bind and chmod
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, mode)
    try:
        if group is None:
            raise LookupError
        gid = grp.getgrnam(group).gr_gid
        os.chown(path, -1, gid)
    except LookupError:
        if group is not None:
            log.info("group %r does not exist; %s keeps its owner's group", group, path)
    except PermissionError:
        log.warning("cannot give %s to group %r (not a member?)", path, group)
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when it is given,
    # and without it a response's header and body segments wait on delayed ACKs (~40 ms).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(config: Config) -> None:
    inf = config.inference
    if not config.paths.run_dir.exists():  # it holds inference-user.sock: every user must reach it
        config.paths.run_dir.mkdir(parents=True)
        os.chmod(config.paths.run_dir, 0o755)
    usock = bind_unix(config.paths.socket, inf.socket_mode, inf.socket_group)
    user_sock = bind_unix(config.paths.user_socket, 0o666, None)  # any user: SO_PEERCRED decides
    tsock = bind_tcp(inf.host, inf.port)
    port = tsock.getsockname()[1]
    port_file = config.paths.port_file
    # Written now, while this process may still write the run directory (below it may stop being root);
    # a client that reads it early waits in the sockets' backlogs until the servers run.
    helpers.atomic_write(port_file, f"{port}\n", mode=0o644)  # which port is public: every user's `memo`
    become(config)
    app = create_app(config)
    common = {"log_config": None, "access_log": False, "timeout_graceful_shutdown": 5}
    unix = _Server(uvicorn.Config(app, lifespan="on", **common))
    user = _Server(uvicorn.Config(user_socket_guard(app), lifespan="off", http=PeerCredProtocol, **common))
    tcp = _Server(uvicorn.Config(tcp_guard(app, inf.tcp_user_data), lifespan="off", **common))

    loop = asyncio.get_running_loop()
    # The model threads (learning, LSTM training) are CPU-bound Python: a shorter GIL slice keeps the
    # event loop's cached answers from waiting behind them for the default 5 ms.
    sys.setswitchinterval(0.001)

    def stop() -> None:
        tcp.exit()
        user.exit()
        unix.exit()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)

    unix_task = asyncio.create_task(unix.serve(sockets=[usock]))
    while not unix.started:
        if unix_task.done():  # startup failed (the lifespan raised): report it
            await unix_task
            raise SystemExit(3)
        await asyncio.sleep(0.01)
    user_task = asyncio.create_task(user.serve(sockets=[user_sock]))
    tcp_task = asyncio.create_task(tcp.serve(sockets=[tsock]))
    while not (tcp.started or tcp_task.done()) or not (user.started or user_task.done()):
        await asyncio.sleep(0.01)
    log.info("memo-inference: unix socket %s (read/write), %s (each user their own, read-only), "
             "http://%s:%d (read-only%s)", config.paths.socket, config.paths.user_socket, inf.host, port,
             "" if inf.tcp_user_data else "; health, metrics and docs only")
    print(f"memo-inference listening on unix:{config.paths.socket} and http://{inf.host}:{port}", flush=True)
    notify.ready(f"listening on unix:{config.paths.socket} and http://{inf.host}:{port}")
    done, _ = await asyncio.wait({unix_task, user_task, tcp_task}, return_when=asyncio.FIRST_COMPLETED)
    stop()  # one listener ending ends all; the read-only ones first, then the lifespan's shutdown
    await tcp_task
    await user_task
    await unix_task
    for f in (port_file, config.paths.socket, config.paths.user_socket):
        with contextlib.suppress(OSError):  # no longer root: the supervisor removes them
            f.unlink()


def become(config: Config) -> None:
    """Started as root: hand <data_dir>/inference to inference.run_as and become that user (see
    inference/runas.py). Either way, an older MEMO's database moves into that folder first."""
    paths = config.paths
    paths.inference_dir.mkdir(parents=True, exist_ok=True)
    runas.migrate(paths.data_dir, paths.inference_dir, DB_NAME)
    who = runas.target(config.inference.run_as)
    if who is None:
        if os.geteuid() == 0:
            log.info("running as root (inference.run_as %r: %s)", config.inference.run_as,
                     "no such user" if config.inference.run_as else "empty")
        return
    runas.prepare(paths.data_dir, paths.inference_dir, who)
    why = runas.can_work_as(who, [paths.inference_dir, Path(inference.__file__).resolve().parent,
                                  Path(sys.prefix)])
    if why:
        log.warning("running as root: %s (make them reachable, or set inference.run_as = \"\")", why)
        return
    runas.drop(who, paths.inference_dir)
