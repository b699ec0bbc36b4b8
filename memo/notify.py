"""Readiness through systemd's notification protocol (sd_notify(3)): a service that is ready sends
"READY=1" in a datagram to the socket named by $NOTIFY_SOCKET. systemd provides that socket for the
units (Type=notify); under `memo up` the supervisor does (Listener), so neither reads a log line to
know that a service is up.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

ENV = "NOTIFY_SOCKET"
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


def ready(status: str = "") -> bool:
    """Tell whoever started this process that it is ready; False when nobody asked ($NOTIFY_SOCKET
    unset) or the message could not be sent (the supervisor's own timeout then speaks). The variable is
    removed, so that the helpers this process starts later (vLLM's engine) do not speak for it."""
    sent = send("READY=1" + (f"\nSTATUS={status}" if status else ""))
    os.environ.pop(ENV, None)
    return sent


def send(message: str) -> bool:
    where = os.environ.get(ENV, "")
    if not where:
        return False
    address = "\0" + where[1:] if where.startswith("@") else where  # "@name": the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), address)
    except OSError:
        return False
    return True


class Listener:
    """The receiving end, for the supervisor: a datagram socket at ``path``; each message comes with its
    sender's pid as the kernel saw it (SCM_CREDENTIALS), so one child cannot speak for another."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        # Any service may send (inference runs as the memo user); the pid in the credentials, not the
        # file mode, says who spoke.
        os.chmod(path, 0o666)
        self.sock.setblocking(False)

    def receive(self) -> list[tuple[int, dict[str, str]]]:
        """The messages waiting: (sender pid, {"READY": "1", ...}), oldest first."""
        out = []
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                return out
            pid = next((_UCRED.unpack(d[:_UCRED.size])[0] for level, kind, d in anc
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), 0)
            fields = dict(line.partition("=")[::2] for line in data.decode(errors="replace").splitlines()
                          if "=" in line)
            out.append((pid, fields))

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
