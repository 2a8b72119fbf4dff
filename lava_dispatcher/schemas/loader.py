"""Safe YAML loading with duplicate-key detection and located error messages."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from lava_dispatcher.errors import InvalidJobError

_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _same_node(loader: Any, first: Node, second: Node) -> bool:
    """Whether two YAML nodes hold the same data."""
    if type(first) is not type(second):
        return False
    if isinstance(first, ScalarNode):
        a = loader.construct_object(first, deep=True)
        b = loader.construct_object(second, deep=True)
        return type(a) is type(b) and bool(a == b)
    if isinstance(first, SequenceNode):
        return len(first.value) == len(second.value) and all(
            _same_node(loader, a, b) for a, b in zip(first.value, second.value, strict=True)
        )
    if isinstance(first, MappingNode):
        return len(first.value) == len(second.value) and all(
            _same_node(loader, ka, kb) and _same_node(loader, va, vb)
            for (ka, va), (kb, vb) in zip(first.value, second.value, strict=True)
        )
    return False


class _DuplicateKey(ConstructorError):
    pass


class StrictSafeLoader(_BASE):
    """A safe loader that refuses a key repeated in one mapping with another value.

    A key repeated with the *same* value is harmless and LAVA's own device
    templates produce one (``adb:`` twice under ``boot.connections`` for
    hi6220-hikey-r2), so it is accepted; a repeat with a different value
    silently overrides the first and is refused.  Keys brought in by a
    ``<<`` merge may be overridden, as YAML intends.
    """

    allow_duplicates = False
    #: when a list, differing duplicates are recorded here (last one wins)
    duplicates: list[str] | None = None

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        # a scalar the resolver typed but Python cannot build (2020-13-45 as a
        # date, an integer of 5000 digits, !!int 12x) is a located YAML error
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:
            value = node.value if isinstance(node, ScalarNode) else ""
            shown = value if len(value) <= 40 else value[:37] + "..."
            raise ConstructorError(
                None,
                None,
                f"cannot read {shown!r} as {node.tag.rsplit(':', 1)[-1]}: {exc}",
                node.start_mark,
            ) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, MappingNode) and (
            not self.allow_duplicates or self.duplicates is not None
        ):
            seen: dict[Any, tuple[Node, Node]] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        "found an unhashable key (a list or mapping used as a key)",
                        key_node.start_mark,
                    ) from None
                if key in seen:
                    first_key, first_value = seen[key]
                    if not _same_node(self, first_value, value_node):
                        if self.duplicates is not None:
                            self.duplicates.append(
                                f"line {key_node.start_mark.line + 1}: duplicate key {key!r} "
                                f"replaces the value given at line {first_key.start_mark.line + 1}"
                            )
                            continue
                        raise _DuplicateKey(
                            None,
                            None,
                            f"duplicate key {key!r} (first defined at line {first_key.start_mark.line + 1}"
                            " with another value)",
                            key_node.start_mark,
                        )
                else:
                    seen[key] = (key_node, value_node)
        return super().construct_mapping(node, deep=deep)


class LenientSafeLoader(StrictSafeLoader):
    """Like LAVA's loader: a repeated key silently replaces the earlier one."""

    allow_duplicates = True


def _location(text: str | bytes, position: int) -> tuple[int, int]:
    before = text[:position]
    if isinstance(before, bytes):
        before = before.decode("utf-8", "replace")
    line = before.count("\n")
    column = len(before) - (before.rfind("\n") + 1)
    return line + 1, column + 1


def load_yaml(
    text: str | bytes,
    source: str,
    *,
    error: type[Exception] = InvalidJobError,
    allow_duplicates: bool = False,
    duplicates: list[str] | None = None,
) -> Any:
    """Parse ``text`` safely; any YAML problem becomes one ``error`` naming source:line:column.

    A key repeated in one mapping with a different value is refused unless
    ``allow_duplicates`` is set (then the last one wins, as in LAVA).  Use it
    for device dictionaries rendered by a LAVA server: LAVA's hi6220-hikey
    template renders ``flash_cmds_order`` twice with different values.
    With ``allow_duplicates`` and a ``duplicates`` list, each replaced key is
    described in the list, so that the caller can warn about it.
    """
    loader_class = LenientSafeLoader if allow_duplicates else StrictSafeLoader
    try:
        loader = loader_class(text)
        loader.duplicates = duplicates
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if (
            exc.context
            and exc.problem
            and exc.context not in problem
            and not isinstance(exc, _DuplicateKey)
        ):
            problem = f"{problem} ({exc.context})"
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        message = f"{where}: {problem}"
    except yaml.reader.ReaderError as exc:
        line, column = _location(text, exc.position)
        message = f"{source}:{line}:{column}: {exc.reason} (character {exc.character!r})"
    except yaml.YAMLError as exc:
        message = f"{source}: {exc}"
    except RecursionError:
        message = f"{source}: the document is nested too deeply"
    try:
        raised = error(message, path="", value=None, expected="a valid YAML document")  # type: ignore[call-arg]
    except TypeError:
        raised = error(message)
    raise raised


__all__ = ["LenientSafeLoader", "StrictSafeLoader", "load_yaml"]
