"""MultiNode group state and the meaning of every coordinator request (no I/O here).

The server feeds each request to :meth:`Groups.handle` and gets the reply
plus what changed (to persist it and to wake held requests). A request whose
answer is ``wait`` can be evaluated again with ``first=False`` as often as
needed: evaluation is idempotent, so re-running it on every change of the
group is how a held request learns that it can be answered.

Semantics follow LAVA's documentation of the MultiNode API; the places where
they differ from LAVA's coordinator code are listed in ``docs/coordinator.md``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LOG = logging.getLogger("lava-coordinator")

Reply = dict[str, Any]
STATE_FORMAT = 1


def wait() -> Reply:
    return {"response": "wait"}


def ack(message: Any = None) -> Reply:
    if message is None:
        return {"response": "ack"}
    return {"response": "ack", "message": copy.deepcopy(message)}


def nack(error: str) -> Reply:
    """A refusal; LAVA's clients read only ``response``, ours show ``error``."""
    return {"response": "nack", "error": error}


def is_wait(reply: Reply) -> bool:
    return reply.get("response") == "wait"


@dataclass
class Client:
    hostname: str
    role: str


@dataclass
class SyncRound:
    """One lava_sync rendezvous: who has arrived, who has been told it is over, and who
    already asks for the next rendezvous of the same id (told, and quicker than the rest)."""

    arrived: list[str] = field(default_factory=list)
    collected: list[str] = field(default_factory=list)
    following: list[str] = field(default_factory=list)


@dataclass
class Group:
    name: str
    size: int
    clients: dict[str, Client] = field(default_factory=dict)
    #: messageID -> sender -> data; kept for the group's whole life
    messages: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    syncs: dict[str, SyncRound] = field(default_factory=dict)
    cleared: list[str] = field(default_factory=list)
    bundles: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.clients) >= self.size

    def roles(self) -> dict[str, str]:
        return {name: client.role for name, client in self.clients.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "name": self.name,
            "size": self.size,
            "clients": [
                {"name": name, "hostname": c.hostname, "role": c.role}
                for name, c in self.clients.items()
            ],
            "messages": self.messages,
            "syncs": {
                key: {"arrived": r.arrived, "collected": r.collected, "following": r.following}
                for key, r in self.syncs.items()
            },
            "cleared": self.cleared,
            "bundles": self.bundles,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Group:
        """The group a state file holds; ValueError when it is not one of ours."""
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown state format {data.get('format')!r}")
        try:
            return cls(
                name=str(data["name"]),
                size=int(data["size"]),
                clients={
                    str(c["name"]): Client(str(c["hostname"]), str(c["role"]))
                    for c in data["clients"]
                },
                messages={
                    str(key): {str(s): dict(v) for s, v in senders.items()}
                    for key, senders in data["messages"].items()
                },
                syncs={
                    str(key): SyncRound(
                        list(r["arrived"]), list(r["collected"]), list(r.get("following", []))
                    )
                    for key, r in data["syncs"].items()
                },
                cleared=list(data["cleared"]),
                bundles=dict(data["bundles"]),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"malformed group state: {exc!r}") from None


@dataclass
class Outcome:
    """What one evaluation of a request did."""

    reply: Reply
    group: str | None = None
    client: str | None = None
    #: the group's state changed: persist it and wake held requests
    changed: bool = False
    #: ... but no held request can be answered because of it: persist only
    quiet: bool = False
    #: the messageID whose state changed (None: anything in the group may have):
    #: only held requests for it need another look
    scope: str | None = None
    #: a member joined or the group was created: every held request needs another look
    everything: bool = False
    #: the group is gone (every member cleared it)
    deleted: bool = False


class RequestError(Exception):
    """A request that cannot be served: the text goes back in a nack."""


def _name(request: Mapping[str, Any], key: str) -> str:
    value = request.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise RequestError(f"missing or invalid {key}")
    return str(value)


def _size(value: Any) -> int:
    if isinstance(value, bool):
        raise RequestError("invalid group_size")
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise RequestError(f"invalid group_size {value!r}") from None
    if size <= 0:
        raise RequestError(f"invalid group_size {value!r}: a group has at least one member")
    return size


class Groups:
    """Every group this coordinator serves, keyed by group name."""

    def __init__(self, groups: Mapping[str, Group] | None = None) -> None:
        self.groups: dict[str, Group] = dict(groups or {})

    def handle(self, request: Mapping[str, Any], *, first: bool = True) -> Outcome:
        """The reply to a request; ``first=False`` re-evaluates a held one (never registers)."""
        outcome = Outcome(reply=wait())
        try:
            kind = request.get("request")
            if not isinstance(kind, str) or not kind:
                raise RequestError("missing request")
            outcome.group = _name(request, "group_name")
            outcome.client = _name(request, "client_name")
            group = self._group(request, outcome, first)
            handler = getattr(self, "_on_" + kind, None)
            if handler is None:
                raise RequestError(f"unknown request {kind!r}")
            outcome.reply = handler(group, outcome.client, request, outcome)
        except RequestError as exc:
            outcome.reply = nack(str(exc))
        return outcome

    # --- membership ------------------------------------------------------------

    def _group(self, request: Mapping[str, Any], outcome: Outcome, first: bool) -> Group:
        name, client = outcome.group, outcome.client
        assert name is not None and client is not None
        group = self.groups.get(name)
        if group is None:
            if not first:
                raise RequestError(f"group {name} was cleared")
            if request.get("group_size") in (None, 0):
                raise RequestError(f"unknown group {name}: its first request must carry group_size")
            group = Group(name=name, size=_size(request["group_size"]))
            self.groups[name] = group
            outcome.changed = outcome.everything = True
            LOG.info("group %s created for %d nodes", name, group.size)
        if client not in group.clients:
            if not first:
                raise RequestError(f"{client} is not a member of group {name}")
            if group.complete:
                raise RequestError(
                    f"group {name} already has its {group.size} members; {client} is not one"
                )
            role = request.get("role")
            if not isinstance(role, str) or not role:
                raise RequestError(f"missing or invalid role for {client} joining group {name}")
            hostname = request.get("hostname")
            group.clients[client] = Client(str(hostname or ""), role)
            outcome.changed = outcome.everything = True
            LOG.info(
                "group %s: %s (role %s) joined, %d of %d",
                name,
                client,
                role,
                len(group.clients),
                group.size,
            )
        return group

    # --- requests (the handler names are the request names) ---------------------

    def _on_group_data(
        self, group: Group, client: str, request: Mapping[str, Any], o: Outcome
    ) -> Reply:
        if not group.complete:
            return wait()
        return {"response": "group_data", "roles": group.roles()}

    def _on_lava_send(
        self, group: Group, client: str, request: Mapping[str, Any], o: Outcome
    ) -> Reply:
        key = _message_id(request)
        data = request.get("message")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise RequestError(f"message for {key!r} must be a mapping of key=value data")
        o.scope = key
        stored = group.messages.setdefault(key, {})
        had = stored.get(client)
        merged = {**(had or {}), **data}
        if had is None or merged != had:
            stored[client] = merged
            o.changed = True
        return ack()

    def _on_lava_start(
        self, group: Group, client: str, request: Mapping[str, Any], o: Outcome
    ) -> Reply:
        """What LAVA's never-called ``request_lava_start`` would send: a lava_start message."""
        return self._on_lava_send(group, client, {**request, "messageID": "lava_start"}, o)

    def _on_lava_wait(
        self, group: Group, client: str, request: Mapping[str, Any], o: Outcome
    ) -> Reply:
        key = _message_id(request)
        senders = group.messages.get(key)
        if not senders:
            return wait()
        return ack(senders)

    def _on_lava_wait_all(
        self, group: Group, client: str, request: Mapping[str, Any], o: Outcome
    ) -> Reply:
        key = _message_id(request)
        role = request.get("waitrole")
        if role is not None and (not isinstance(role, str) or not role):
            raise RequestError("invalid waitrole")
        if not group.complete:
            return wait()  # members still to join have not sent yet
        members = [name for name, c in group.clients.items() if role is None or c.role == role]
        if not members:
            raise RequestError(f"no member of group {group.name} has role {role!r}")
        senders = group.messages.get(key) or {}
        if any(member not in senders for member in members):
            return wait()
        return ack(senders)

    def _on_lava_sync(
        self, group: Group, client: str, request: Mapping[str, Any], o: Outcome
    ) -> Reply:
        key = o.scope = _message_id(request)
        sync = group.syncs.setdefault(key, SyncRound())
        everyone = len(sync.arrived) >= group.size
        if everyone and client in sync.arrived and client not in sync.collected:
            # being told changes nothing for the others (no wake-up for each of
            # them at each release: that was quadratic in the group's size) ...
            sync.collected.append(client)
            o.changed = o.quiet = True
            if set(sync.collected) >= set(sync.arrived):
                # everyone has been told: the next rendezvous of this id may begin
                if sync.following:
                    group.syncs[key] = SyncRound(arrived=sync.following)
                    o.quiet = False  # ... except those already at the next one
                else:
                    del group.syncs[key]
            return ack(request.get("message") or key)
        if everyone and client in sync.collected:
            # told already and asking again: this is the next rendezvous, not this one
            if client not in sync.following:
                sync.following.append(client)
                o.changed = True
            return wait()
        if client not in sync.arrived:
            sync.arrived.append(client)
            o.changed = True
        return wait()

    def _on_clear_group(
        self, group: Group, client: str, request: Mapping[str, Any], o: Outcome
    ) -> Reply:
        if client not in group.cleared:
            group.cleared.append(client)
            o.changed = True
        if set(group.cleared) >= set(group.clients):
            del self.groups[group.name]
            o.deleted = o.changed = True
            LOG.info("group %s cleared by all its members: deleted", group.name)
        return ack()

    def _on_aggregate(
        self, group: Group, client: str, request: Mapping[str, Any], o: Outcome
    ) -> Reply:
        """Legacy result-bundle gathering: sub_id ``*.0`` gets every node's bundle."""
        if "bundle" not in request:
            raise RequestError("aggregate without a bundle")
        sub_id = request.get("sub_id")
        if sub_id is None:
            raise RequestError("aggregate without a sub_id")
        if group.bundles.get(client) != request["bundle"] or client not in group.bundles:
            group.bundles[client] = request["bundle"]
            o.changed = True
        if not str(sub_id).endswith(".0"):
            return ack()
        if len(group.bundles) < group.size:
            return wait()
        return ack({"bundle": group.bundles})

    def _on_complete(
        self, group: Group, client: str, request: Mapping[str, Any], o: Outcome
    ) -> Reply:
        """Legacy end of communication; LAVA closes without a reply, we acknowledge."""
        return ack()


def _message_id(request: Mapping[str, Any]) -> str:
    value = request.get("messageID")
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise RequestError("missing or invalid messageID")
    return str(value)
