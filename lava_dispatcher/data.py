"""Typed data shared between actions, per namespace.

LAVA passes everything through a four-level string-keyed dict, by
convention. Here each piece of shared data is a declared :class:`Key` with a
type and a docstring, set by the action that produces it and read by the
actions that need it; an action can name the keys it ``needs`` and
``provides`` so that the pipeline checks the wiring before anything runs.
A key may carry a label (the downloaded file *for label* ``kernel``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast, overload

from lava_dispatcher.errors import LAVABug

T = TypeVar("T")

_MISSING: Any = object()


@dataclass(frozen=True)
class Key(Generic[T]):
    """A declared piece of shared data: its name, its type and what it is for."""

    name: str
    type: type[Any]
    doc: str = ""

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


class NamespaceData:
    """The shared data of one namespace (``common`` unless the job names others)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._values: dict[tuple[Key[Any], str], Any] = {}

    def set(self, key: Key[T], value: T, label: str = "") -> None:
        if value is not None and not isinstance(value, key.type):
            raise LAVABug(
                f"{key.name} in namespace {self.namespace!r} must be a {key.type.__name__}, "
                f"got {type(value).__name__}"
            )
        self._values[(key, label)] = value

    @overload
    def get(self, key: Key[T], label: str = "") -> T: ...

    @overload
    def get(self, key: Key[T], label: str = "", default: T | None = None) -> T | None: ...

    def get(self, key: Key[T], label: str = "", default: Any = _MISSING) -> Any:
        try:
            return cast(T, self._values[(key, label)])
        except KeyError:
            if default is not _MISSING:
                return default
            what = f"{key.name}[{label}]" if label else key.name
            raise LAVABug(
                f"no {what} in namespace {self.namespace!r}: no earlier action provided it"
            ) from None

    def labels(self, key: Key[Any]) -> list[str]:
        """The labels ``key`` was set under, in the order they were set."""
        return [label for (k, label) in self._values if k == key]

    def pop(self, key: Key[T], label: str = "") -> T | None:
        return cast("T | None", self._values.pop((key, label), None))


class SharedData:
    """All namespaces of one job."""

    def __init__(self) -> None:
        self._spaces: dict[str, NamespaceData] = {}

    def __call__(self, namespace: str) -> NamespaceData:
        space = self._spaces.get(namespace)
        if space is None:
            space = self._spaces[namespace] = NamespaceData(namespace)
        return space

    def namespaces(self) -> list[str]:
        return list(self._spaces)
