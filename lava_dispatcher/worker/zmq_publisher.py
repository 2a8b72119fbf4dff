"""The ZeroMQ PUB socket LAVA's event clients subscribe to (zmq_client.py, SQUAD, lavacli).

Each event goes out as LAVA's five frames (:meth:`Event.frames`). Sending
never blocks the worker: a PUB socket drops what a slow subscriber cannot
take (its high-water mark). The socket has LAVA's ZMTP heartbeats (5 s, 15 s
timeout), so that dead subscribers are noticed.

LAVA's PUB socket sends every event to anyone who connects, private jobs'
included. This one sends private jobs' events only when CURVE keys are
configured (then only clients holding the server's public key, and whose own
keys the admin lists, can connect at all); otherwise only public events. The
authenticated WebSocket at ``/ws/`` is the way to follow one's private jobs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import zmq

from lava_dispatcher.worker.events import Event

LOG = logging.getLogger("lava-worker.events")

#: LAVA's socket options (api-surface.md §3.1)
HEARTBEAT_IVL_MS = 5000
HEARTBEAT_TIMEOUT_MS = 15000
SNDHWM = 10_000


@dataclass(frozen=True)
class CurveKeys:
    """The server's key pair and the client public keys allowed to connect (Z85 text)."""

    public: str
    secret: str
    clients: tuple[str, ...]

    @classmethod
    def load(cls, server_secret_file: Path, clients_dir: Path) -> CurveKeys:
        """The server's secret key file (Z85, one line) and a directory of client
        public keys (``*.key``, Z85, one line each). ValueError when unusable."""
        try:
            secret = server_secret_file.read_text(encoding="ascii").strip()
            public = zmq.curve_public(secret.encode("ascii")).decode("ascii")
        except (OSError, UnicodeError, ValueError, zmq.ZMQError) as exc:
            raise ValueError(f"event CURVE secret key {server_secret_file}: {exc}") from None
        clients = []
        for path in sorted(clients_dir.glob("*.key")):
            key = path.read_text(encoding="ascii").strip()
            if len(key) != 40:
                raise ValueError(f"event CURVE client key {path}: expected 40 Z85 characters")
            clients.append(key)
        return cls(public, secret, tuple(clients))


class ZmqPublisher:
    """A bound PUB socket; :meth:`send` is an EventHub listener."""

    def __init__(self, address: str, curve: CurveKeys | None = None) -> None:
        self.context = zmq.Context()
        self.curve = curve
        self._auth = None
        self.socket = self.context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, SNDHWM)
        self.socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        self.socket.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
        if curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self.context)
            self._auth.start()
            self._auth.configure_curve_callback(domain="*", credentials_provider=_Allowed(curve))
            self.socket.curve_server = True
            self.socket.curve_secretkey = curve.secret.encode("ascii")
            self.socket.curve_publickey = curve.public.encode("ascii")
        try:
            self.socket.bind(address)
        except zmq.ZMQError as exc:
            self.close()
            raise OSError(f"cannot publish events on {address}: {exc}") from None
        self.address = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sent = 0

    def send(self, event: Event) -> None:
        if not event.public and self.curve is None:
            return  # private jobs' events only to authenticated clients
        try:
            self.socket.send_multipart([frame.encode("utf-8") for frame in event.frames()],
                                       flags=zmq.NOBLOCK)  # fmt: skip
            self.sent += 1
        except zmq.Again:
            pass  # PUB never blocks; a full pipe drops, as LAVA's does
        except zmq.ZMQError as exc:
            LOG.warning("event %d not published: %s", event.seq, exc)

    def close(self) -> None:
        self.socket.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self.context.term()


class _Allowed:
    """CURVE credentials check: the client's public key must be one the admin listed."""

    def __init__(self, curve: CurveKeys) -> None:
        self.keys = {key.encode("ascii") for key in curve.clients}

    def callback(self, domain: str, key: bytes) -> bool:
        """``key``: the client's public key, Z85 (what pyzmq's authenticator passes)."""
        return key in self.keys
