"""Generic validators with self-describing expectations.

Voluptuous does the walking; these callables decide what a value may be and,
when it is not, raise an error that says *what was expected* in words a test
writer understands ("a positive integer", "one of 'gz', 'xz'", "a mapping
with the keys ...").  The error classes defined here carry that text so that
:mod:`lava_dispatcher.schemas.errors` can turn the first failure into one
message of the form ``<path>: got <value>; expected <expectation>``.

Every validator exposes ``expected`` (a noun phrase) so that a parent can
describe a missing key ("required key missing; expected a timeout such as
{minutes: 10}") without guessing.  :func:`describe` does the same for plain
voluptuous schema objects supplied by plugins.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, cast

import voluptuous as vol

__all__ = [
    "Anything",
    "Bool",
    "Conflict",
    "Either",
    "Int",
    "Keyed",
    "ListOf",
    "Map",
    "Mismatch",
    "MissingKey",
    "Nullable",
    "Number",
    "OneOf",
    "Pattern",
    "Scalar",
    "Str",
    "UnknownKey",
    "Validator",
    "describe",
    "quote_list",
    "suggest",
]

Path = list[Hashable]


# --------------------------------------------------------------------------
# error classes (all are voluptuous.Invalid so that voluptuous keeps paths)
# --------------------------------------------------------------------------


class Mismatch(vol.Invalid):
    """The value at ``path`` is not what was expected."""

    def __init__(self, expected: str, path: Path | None = None, *, hint: str = "") -> None:
        super().__init__(f"expected {expected}", path)
        self.expected = expected
        self.hint = hint


class MissingKey(vol.Invalid):
    """A required key is absent; ``path`` ends with the missing key."""

    def __init__(self, expected: str, path: Path | None = None, *, hint: str = "") -> None:
        super().__init__("required key missing", path)
        self.expected = expected
        self.hint = hint


class UnknownKey(vol.Invalid):
    """A key is not allowed here; ``path`` ends with the offending key."""

    def __init__(self, expected: str, path: Path | None = None, *, hint: str = "") -> None:
        super().__init__("unknown key", path)
        self.expected = expected
        self.hint = hint


class Conflict(vol.Invalid):
    """Two keys that exclude each other are both present (or a pairing is broken).

    ``path`` ends with the key reported; ``detail`` says what it clashes with.
    """

    def __init__(self, detail: str, expected: str, path: Path | None = None) -> None:
        super().__init__(detail, path)
        self.detail = detail
        self.expected = expected
        self.hint = ""


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def quote_list(values: Iterable[Any], limit: int = 0, conj: str = "or") -> str:
    """``'a', 'b' or 'c'`` (sorted as given; ``limit`` truncates with '...')."""
    items = [repr(v) if isinstance(v, str) else str(v) for v in values]
    if limit and len(items) > limit:
        items = [*items[:limit], "..."]
        return ", ".join(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


def _normalise(word: str) -> str:
    return word.lower().replace("_", "-").replace(" ", "-")


def suggest(word: Any, candidates: Iterable[Any]) -> str | None:
    """The candidate ``word`` was probably meant to be, if one is close enough."""
    if not isinstance(word, str) or not word:
        return None
    names = [c for c in candidates if isinstance(c, str)]
    for name in names:
        if _normalise(name) == _normalise(word):
            return name
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.75)
    return close[0] if close else None


def _distance(first: str, second: str, limit: int) -> int:
    """Edit distance with adjacent transpositions (stops early past ``limit``)."""
    if abs(len(first) - len(second)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(second) + 1))
    for i, a in enumerate(first, 1):
        current = [i]
        for j, b in enumerate(second, 1):
            cost = 0 if a == b else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a == second[j - 2] and first[i - 2] == b:
                value = min(value, previous2[j - 2] + 1)
            current.append(value)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


def looks_like_typo(word: Any, candidates: Iterable[Any]) -> str | None:
    """A stricter :func:`suggest` used where unknown keys are otherwise allowed.

    Only near-certain typos count: the same word up to case and ``-``/``_``;
    one letter wrong, missing, extra or swapped in a word of 5+ characters
    (two in a word of 10+).  A known word followed by digits (``grub2``) is
    taken as a deliberate variant, not a typo.
    """
    if not isinstance(word, str) or not word:
        return None
    names = [c for c in candidates if isinstance(c, str) and c != word]
    for name in names:
        if _normalise(name) == _normalise(word):
            return name
    if len(word) < 5:
        return None
    limit = 2 if len(word) >= 10 else 1
    for name in names:
        if word.startswith(name) and word[len(name) :].isdigit():
            continue
        if _distance(_normalise(word), _normalise(name), limit) <= limit:
            return name
    return None


def _article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def describe(schema: Any) -> str:
    """A noun phrase for what ``schema`` accepts (for our validators and plain voluptuous)."""
    expected = getattr(schema, "expected", None)
    if isinstance(expected, str):
        return expected
    if isinstance(schema, vol.Schema):
        return describe(schema.schema)
    simple = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "a mapping",
        list: "a list",
        object: "any value",
    }
    if isinstance(schema, type):
        return simple.get(schema, _article(schema.__name__))
    if isinstance(schema, dict):
        keys = [k.schema if isinstance(k, vol.Marker) else k for k in schema]
        literal = [k for k in keys if isinstance(k, str)]
        if literal:
            return "a mapping with the keys " + quote_list(sorted(literal), conj="and")
        return "a mapping"
    if isinstance(schema, list):
        if len(schema) == 1:
            return f"a list of items, each {describe(schema[0])}"
        return "a list"
    if isinstance(schema, vol.Any):
        return " or ".join(describe(v) for v in schema.validators)
    if isinstance(schema, vol.All):
        return describe(schema.validators[0]) if schema.validators else "any value"
    if isinstance(schema, vol.In):
        return "one of " + quote_list(list(cast(Iterable[Any], schema.container)))
    if isinstance(schema, vol.Match):
        return f"a string matching {schema.pattern.pattern!r}"
    if isinstance(schema, vol.Range):
        return _range_text("a number", schema.min, schema.max)
    if isinstance(schema, (str, int, float)) or schema is None:
        return repr(schema) if schema is not None else "null"
    return "a valid value"


def _range_text(noun: str, low: Any, high: Any) -> str:
    if low is not None and high is not None:
        return f"{noun} from {low} to {high}"
    if low == 1:
        return f"a positive {noun.split(' ', 1)[1]}"
    if low == 0:
        return f"{noun} >= 0"
    if low is not None:
        return f"{noun} >= {low}"
    if high is not None:
        return f"{noun} <= {high}"
    return noun


def _compile(schema: Any) -> Callable[[Any], Any]:
    """A callable validating one value; errors keep a relative path."""
    if isinstance(schema, Validator):
        return schema
    compiled = vol.Schema(schema)

    def run(value: Any) -> Any:
        return compiled(value)

    return run


def _collect(errors: list[vol.Invalid], exc: vol.Invalid, prefix: Path) -> None:
    if isinstance(exc, vol.MultipleInvalid):
        for err in exc.errors:
            _collect(errors, err, prefix)
        return
    exc.prepend(list(prefix))
    errors.append(exc)


def _raise(errors: list[vol.Invalid]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise vol.MultipleInvalid(errors)


# --------------------------------------------------------------------------
# scalar validators
# --------------------------------------------------------------------------


class Validator:
    """Base class: a callable that returns the (unchanged) value or raises Mismatch."""

    expected = "a valid value"

    def __call__(self, value: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.expected}>"


class Anything(Validator):
    expected = "any value"

    def __init__(self, expected: str = "any value") -> None:
        self.expected = expected

    def __call__(self, value: Any) -> Any:
        return value


class Str(Validator):
    """A string; optionally non-empty or matching a regular expression."""

    def __init__(self, expected: str | None = None, *, nonempty: bool = False) -> None:
        self.nonempty = nonempty
        self.expected = expected or ("a non-empty string" if nonempty else "a string")

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or (self.nonempty and not value):
            raise Mismatch(self.expected)
        return value


class Pattern(Validator):
    """A string matching ``regex`` (``re.fullmatch``)."""

    def __init__(self, regex: str, expected: str, flags: int = 0) -> None:
        self.regex = re.compile(regex, flags)
        self.expected = expected

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or not self.regex.fullmatch(value):
            raise Mismatch(self.expected)
        return value


class Int(Validator):
    """An integer (never a boolean) in an optional range."""

    def __init__(
        self, low: int | None = None, high: int | None = None, expected: str | None = None
    ) -> None:
        self.low = low
        self.high = high
        self.expected = expected or _range_text("an integer", low, high)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Mismatch(self.expected)
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            raise Mismatch(self.expected)
        return value


class Number(Validator):
    """An integer or a float (never a boolean)."""

    def __init__(self, low: float | None = None, expected: str | None = None) -> None:
        self.low = low
        self.expected = expected or _range_text("a number", low, None)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Mismatch(self.expected)
        if self.low is not None and value < self.low:
            raise Mismatch(self.expected)
        return value


class Bool(Validator):
    expected = "true or false"

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise Mismatch(self.expected)
        return value


class Scalar(Validator):
    """A string, number or boolean (optionally null)."""

    def __init__(self, *, null: bool = False, expected: str | None = None) -> None:
        self.null = null
        self.expected = expected or (
            "a string, number or boolean" + (" (or nothing)" if null else "")
        )

    def __call__(self, value: Any) -> Any:
        if value is None and self.null:
            return value
        if not isinstance(value, (str, int, float)):
            raise Mismatch(self.expected)
        return value


class OneOf(Validator):
    """One of a fixed set of literal values (with a 'did you mean' hint)."""

    def __init__(self, *values: Any, expected: str | None = None, sort: bool = True) -> None:
        self.values = tuple(values)
        shown = sorted(values, key=repr) if sort else list(values)
        self.expected = expected or (
            f"{shown[0]!r}" if len(shown) == 1 else "one of " + quote_list(shown)
        )

    def __call__(self, value: Any) -> Any:
        # bool is an int: never let True stand for 1 nor 1 for True.
        for allowed in self.values:
            if value == allowed and type(value) is type(allowed):
                return value
        hint = suggest(value, self.values) if len(self.values) > 1 else None
        raise Mismatch(self.expected, hint=f"did you mean {hint!r}?" if hint else "")


class Nullable(Validator):
    """``None`` (an empty YAML value) or whatever ``inner`` accepts."""

    def __init__(self, inner: Any, expected: str | None = None) -> None:
        self.inner = _compile(inner)
        self.expected = expected or f"{describe(inner)} (or nothing)"

    def __call__(self, value: Any) -> Any:
        if value is None:
            return value
        return self.inner(value)


class Either(Validator):
    """The first alternative that accepts the value.

    When all fail, an alternative that failed *inside* the value (a deeper
    path: the right shape with a bad item) is reported, since it is the one
    the writer meant; otherwise the combined expectation is reported.
    """

    def __init__(self, *alternatives: Any, expected: str | None = None) -> None:
        self.alternatives = [_compile(a) for a in alternatives]
        self.expected = expected or " or ".join(describe(a) for a in alternatives)

    def __call__(self, value: Any) -> Any:
        deep: vol.Invalid | None = None
        hint = ""
        for check in self.alternatives:
            try:
                return check(value)
            except vol.Invalid as exc:
                errors: list[vol.Invalid] = []
                _collect(errors, exc, [])
                if deep is None and any(e.path for e in errors):
                    deep = exc
                hint = hint or next((getattr(e, "hint", "") for e in errors if not e.path), "")
        if deep is not None:
            raise deep
        raise Mismatch(self.expected, hint=hint)


# --------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------


class ListOf(Validator):
    """A list whose items all match ``item``; every bad item is reported."""

    def __init__(self, item: Any, *, nonempty: bool = False, expected: str | None = None) -> None:
        self.item = _compile(item)
        self.nonempty = nonempty
        self.expected = expected or (
            ("a non-empty list" if nonempty else "a list") + f" of items, each {describe(item)}"
        )

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, list) or (self.nonempty and not value):
            raise Mismatch(self.expected)
        out = []
        errors: list[vol.Invalid] = []
        for index, item in enumerate(value):
            try:
                out.append(self.item(item))
            except vol.Invalid as exc:
                _collect(errors, exc, [index])
        _raise(errors)
        return out


class Keyed(Validator):
    """A mapping whose keys are free-form (``key`` checks them) and values match ``value``."""

    def __init__(
        self,
        value: Any,
        *,
        key: Any = None,
        nonempty: bool = False,
        expected: str | None = None,
        key_expected: str = "a string key",
    ) -> None:
        self.value = _compile(value)
        self.key = _compile(key) if key is not None else Str()
        self.key_expected = key_expected
        self.nonempty = nonempty
        self.expected = expected or (
            ("a non-empty mapping" if nonempty else "a mapping") + f" of names to {describe(value)}"
        )

    def __call__(self, data: Any) -> Any:
        if not isinstance(data, dict) or (self.nonempty and not data):
            raise Mismatch(self.expected)
        out = {}
        errors: list[vol.Invalid] = []
        for name, item in data.items():
            try:
                self.key(name)
            except vol.Invalid:
                errors.append(UnknownKey(self.key_expected, [name]))
                continue
            try:
                out[name] = self.value(item)
            except vol.Invalid as exc:
                _collect(errors, exc, [name])
        _raise(errors)
        return out


def _key_name(marker: Any) -> Any:
    return marker.schema if isinstance(marker, vol.Marker) else marker


class Map(Validator):
    """A mapping with declared keys (a voluptuous dict schema), strict by default.

    * unknown keys are refused with the list of allowed keys and a
      'did you mean' hint; with ``extra`` set, unknown keys are validated by
      it instead, and with ``typo_guard`` they are accepted unless they look
      like a misspelling of a declared key;
    * a missing required key says what its value should be;
    * ``checks`` run on the validated mapping and raise errors with paths
      relative to it (mutually exclusive keys, pairs of keys ...).
    """

    def __init__(
        self,
        fields: Mapping[Any, Any],
        *,
        expected: str | None = None,
        checks: Sequence[Callable[[dict[Any, Any]], None]] = (),
        extra: Any = None,
        typo_guard: bool = False,
    ) -> None:
        self.fields = dict(fields)
        self.checks = tuple(checks)
        self.typo_guard = typo_guard
        self.extra = _compile(extra) if extra is not None else None
        self.known = [k for k in (_key_name(m) for m in self.fields) if isinstance(k, str)]
        self._literal = set(self.known)
        self._patterns = [
            vol.Schema(_key_name(m)) for m in self.fields if not isinstance(_key_name(m), str)
        ]
        self._has_patterns = bool(self._patterns)
        self._values = {_key_name(m): v for m, v in self.fields.items()}
        allow = self.extra is not None or typo_guard
        self._schema = vol.Schema(
            self.fields, extra=vol.ALLOW_EXTRA if allow else vol.PREVENT_EXTRA
        )
        self.expected = expected or (
            "a mapping with the keys " + quote_list(sorted(self.known), conj="and")
            if self.known
            else "a mapping"
        )

    def keys_text(self) -> str:
        keys = sorted(self.known)
        if not keys:
            return "no other keys"
        return ("the key " if len(keys) == 1 else "one of ") + quote_list(keys)

    def _refine(self, err: vol.Invalid) -> vol.Invalid:
        """Replace voluptuous's generic top-level messages with ours."""
        if len(err.path) != 1 or isinstance(err, (MissingKey, UnknownKey, Conflict)):
            return err
        key = _key_name(err.path[0])
        err._path = [key]  # voluptuous may leave its Required/Optional marker in the path
        if isinstance(err, vol.RequiredFieldInvalid):
            if err.msg == "required key not provided":
                return MissingKey(describe(self._values.get(key, object)), [key])
            return err
        # a key that matches nothing (voluptuous reports the last key pattern it tried)
        if err.msg == "extra keys not allowed" or (
            key not in self._literal and not self._matches_pattern(key)
        ):
            hint = suggest(key, self.known)
            return UnknownKey(
                self.keys_text(), [key], hint=f"did you mean {hint!r}?" if hint else ""
            )
        return err

    def __call__(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise Mismatch(self.expected)
        errors: list[vol.Invalid] = []
        if self.extra is not None or self.typo_guard:
            for key in data:
                if key in self._literal or (self._has_patterns and self._matches_pattern(key)):
                    continue
                if self.typo_guard:
                    near = looks_like_typo(key, self.known)
                    if near is not None:
                        errors.append(
                            UnknownKey(self.keys_text(), [key], hint=f"did you mean {near!r}?")
                        )
                        continue
                if self.extra is not None:
                    try:
                        self.extra(data[key])
                    except vol.Invalid as exc:
                        _collect(errors, exc, [key])
        try:
            out = self._schema(data)
        except vol.MultipleInvalid as exc:
            flat: list[vol.Invalid] = []
            _collect(flat, exc, [])
            errors.extend(self._refine(e) for e in flat)
        _raise(errors)
        for check in self.checks:
            check(out)
        return out

    def _matches_pattern(self, key: Any) -> bool:
        for pattern in self._patterns:
            try:
                pattern(key)
            except vol.Invalid:
                continue
            return True
        return False

    def with_fields(self, more: Mapping[Any, Any], **kwargs: Any) -> Map:
        """A copy with extra or replaced fields (same checks unless overridden)."""
        fields = dict(self.fields)
        names = {_key_name(m): m for m in fields}
        for marker, value in more.items():
            old = names.get(_key_name(marker))
            if old is not None:
                del fields[old]
            fields[marker] = value
        options: dict[str, Any] = {
            "checks": self.checks,
            "typo_guard": self.typo_guard,
            "extra": self.extra,
        }
        options.update(kwargs)
        return Map(fields, **options)


# --------------------------------------------------------------------------
# check helpers for Map(checks=...)
# --------------------------------------------------------------------------


def exclusive(
    *keys: str, required: bool = False, what: str = ""
) -> Callable[[dict[Any, Any]], None]:
    """At most one (exactly one when ``required``) of ``keys`` may be present."""

    def check(data: dict[Any, Any]) -> None:
        present = [k for k in keys if k in data]
        if len(present) > 1:
            raise Conflict(
                f"{present[1]!r} cannot be used together with {present[0]!r}",
                f"only one of {quote_list(keys)}" + (f" ({what})" if what else ""),
                [present[1]],
            )
        if required and not present:
            raise MissingKey(
                f"one of {quote_list(keys)}" + (f" ({what})" if what else ""), [keys[0]]
            )

    return check


def together(first: str, second: str) -> Callable[[dict[Any, Any]], None]:
    """``first`` and ``second`` are both present or both absent."""

    def check(data: dict[Any, Any]) -> None:
        if (first in data) != (second in data):
            missing = second if first in data else first
            present = first if first in data else second
            raise MissingKey(f"{missing!r} together with {present!r}", [missing])

    return check
