"""XML-RPC at ``/RPC2``: LAVA's transport, faults and ``system.*`` introspection.

lavacli, SQUAD and lab scripts talk to LAVA through Python's
``xmlrpc.client``; this module is their server side on the worker's aiohttp
application (reference: api-surface.md §1). The methods themselves live in
:mod:`lava_dispatcher.worker.xmlrpc_methods` and call the
:class:`~lava_dispatcher.worker.service.Service` only.

Transport, as LAVA does it:

* ``POST /RPC2`` and ``/RPC2/`` (any other method: HTTP 405); the caller is
  the one the HTTP layer authenticated (``Basic user:token``, which lavacli
  puts in its URL); wrong credentials are HTTP 401 ``Invalid token`` and a
  malformed header HTTP 400, before any XML is read;
* answers are ``application/xml; charset=utf-8``, marshalled with
  ``allow_none``; service errors become faults with LAVA's codes (404, 403,
  401, 400), a wrong argument count or type -32602, an unknown method -32601.

Parsing is ours rather than ``xmlrpc.client.loads``, for safety: the
request is parsed by expat with a handler that refuses any document type
declaration, so no entity can be declared at all (no "billion laughs", no
quadratic blow-up, no external entity), whatever the expat version; elements
may nest at most :data:`MAX_DEPTH` deep; the body is bounded by the
application's ``client_max_size`` (HTTP 413 past it). Decoding the values is
left to the standard library's ``Unmarshaller``.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import logging
import re
import xmlrpc.client
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from xml.parsers import expat

from aiohttp import web

from lava_dispatcher.worker.errors import BadRequest, WorkerError
from lava_dispatcher.worker.http import SERVICE
from lava_dispatcher.worker.service import Service
from lava_dispatcher.worker.store import UserRecord

LOG = logging.getLogger("lava-worker.xmlrpc")

# the fault codes of the XML-RPC interoperability spec (LAVA uses the same)
NOT_WELL_FORMED = -32700
INVALID_REQUEST = -32600
NO_SUCH_METHOD = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

#: deepest element nesting accepted (a call is 6 deep; each array or struct adds 2 or 3)
MAX_DEPTH = 64
#: longest method name accepted
MAX_NAME = 200
#: most calls in one ``system.multicall``
MAX_MULTICALL = 1000
#: bodies larger than this are parsed in a thread, not on the event loop
PARSE_IN_THREAD = 256 << 10
#: characters XML 1.0 cannot carry (a job's error message may hold console control codes)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class RequestError(Exception):
    """A body that is not an XML-RPC call: answered as a fault, nothing is called."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class ParamError(WorkerError):
    """An argument of the wrong type or out of range (fault -32602)."""

    fault_code = INVALID_PARAMS


def parse_request(body: bytes) -> tuple[str, tuple[Any, ...]]:
    """The method name and arguments of an XML-RPC call; RequestError for anything else."""
    target = xmlrpc.client.Unmarshaller()
    target.xml(None, None)  # type: ignore[arg-type]  # expat hands over decoded text: nothing to decode
    parser = expat.ParserCreate()
    depth = 0

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise RequestError(INVALID_REQUEST, f"elements nested deeper than {MAX_DEPTH}")
        target.start(tag, attrs)

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1
        target.end(tag)

    def no_doctype(*_args: Any) -> None:
        raise RequestError(INVALID_REQUEST, "a document type declaration (<!DOCTYPE>) is not allowed")

    parser.StartDoctypeDeclHandler = no_doctype
    parser.EntityDeclHandler = no_doctype
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = target.data
    try:
        parser.Parse(body, True)
        params = target.close()
        name = target.getmethodname()
    except RequestError:
        raise
    except expat.ExpatError as exc:
        raise RequestError(NOT_WELL_FORMED, f"not well-formed XML: {exc}") from None
    except xmlrpc.client.Fault:
        raise RequestError(INVALID_REQUEST, "a fault is an answer, not a call") from None
    except Exception as exc:  # the Unmarshaller trusts its input: any of its errors is a bad call
        raise RequestError(INVALID_REQUEST, f"not an XML-RPC call: {type(exc).__name__}: {exc}") from None
    if not isinstance(name, str) or not name:
        raise RequestError(INVALID_REQUEST, "not an XML-RPC call: no <methodName>")
    if len(name) > MAX_NAME:
        raise RequestError(INVALID_REQUEST, f"method name longer than {MAX_NAME} characters")
    return name, tuple(params)


def xml_safe(value: Any) -> Any:
    """``value`` with characters XML cannot carry replaced by U+FFFD, so the answer always parses."""
    if isinstance(value, str):
        return _NOT_XML.sub("\ufffd", value) if _NOT_XML.search(value) else value
    if isinstance(value, (list, tuple)):
        return [xml_safe(v) for v in value]
    if isinstance(value, dict):
        return {xml_safe(k): xml_safe(v) for k, v in value.items()}
    return value


# -- arguments ------------------------------------------------------------------------


def kind(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


def as_job_id(value: Any) -> str:
    """A job id as clients send it: ``12``, ``"12"`` or ``"12.1"``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ParamError(f"job id: expected an integer or a string such as '12' or '12.1', not {kind(value)}")
    text = str(value).strip()
    if not text:
        raise BadRequest("Bad request: TestJob id was not specified.")
    return text


def as_count(value: Any, what: str, default: int | None) -> int | None:
    """A whole number from 0 to 2**31 - 1 (nil: the default)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise ParamError(f"{what}: expected a whole number from 0 to 2147483647, not {value!r}")
    return value


def as_minutes(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2**31:
        raise ParamError(f"{what}: expected a number of minutes, not {value!r}")
    return float(value)


def as_text(value: Any, what: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ParamError(f"{what}: expected a string, not {kind(value)}")
    return value


def as_flag(value: Any, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, (bool, int)):
        raise ParamError(f"{what}: expected a boolean, not {kind(value)}")
    return bool(value)


def date_time(when: float | None) -> xmlrpc.client.DateTime | None:
    """An epoch time as XML-RPC's dateTime.iso8601, in UTC."""
    if when is None:
        return None
    return xmlrpc.client.DateTime(datetime.datetime.fromtimestamp(when, datetime.UTC).replace(tzinfo=None))


# -- the method table -------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """What a method gets besides its arguments: who asks, the service, the table."""

    service: Service
    user: UserRecord | None
    methods: Methods


Method = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Entry:
    function: Method
    signature: inspect.Signature

    def usage(self, name: str) -> str:
        params = list(self.signature.parameters.values())[1:]
        shown = [p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params]
        return f"{name}({', '.join(shown)})"


class Methods:
    """The XML-RPC methods by dotted name; each is ``async def f(call, *args)``."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def method(self, name: str) -> Callable[[Method], Method]:
        def register(function: Method) -> Method:
            if name in self.entries:
                raise ValueError(f"XML-RPC method {name} is registered twice")
            self.entries[name] = Entry(function, inspect.signature(function))
            return function

        return register

    async def dispatch(self, call: Call, name: str, params: tuple[Any, ...]) -> Any:
        """Run one method; xmlrpc.client.Fault for every error."""
        entry = self.entries.get(name)
        if entry is None:
            if name == "close":  # what LAVA answers to a client's __close
                return None
            raise xmlrpc.client.Fault(NO_SUCH_METHOD, f"No such method: {name!r}")
        try:
            entry.signature.bind(call, *params)
        except TypeError:
            count = len(params)
            raise xmlrpc.client.Fault(
                INVALID_PARAMS,
                f"{entry.usage(name)}: {count} argument{'' if count == 1 else 's'} given",
            ) from None
        try:
            return await entry.function(call, *params)
        except xmlrpc.client.Fault:
            raise
        except WorkerError as exc:
            raise xmlrpc.client.Fault(exc.fault_code, str(exc)) from None
        except Exception as exc:
            LOG.exception("XML-RPC %s failed", name)
            raise xmlrpc.client.Fault(
                INTERNAL_ERROR, f"Internal Server Error (contact server administrator for details): {exc}"
            ) from None


#: every method of this server (xmlrpc_methods and xmlrpc_lab add theirs)
METHODS = Methods()


# -- system.* ----------------------------------------------------------------------------


@METHODS.method("system.version")
async def version(call: Call) -> str:
    """LAVA's calendar version, which lavacli gates its features on, then this dispatcher's."""
    return await call.service.version()


@METHODS.method("system.whoami")
async def whoami(call: Call) -> str | None:
    """The caller's user name; None (nil) when anonymous."""
    return await call.service.whoami(call.user)


@METHODS.method("system.api_version")
async def api_version(call: Call) -> int:
    """The XML-RPC API version: 2, as LAVA's."""
    return 2


@METHODS.method("system.listMethods")
async def list_methods(call: Call) -> list[str]:
    """Every method of this server, sorted."""
    return sorted(call.methods.entries)


@METHODS.method("system.methodHelp")
async def method_help(call: Call, method_name: str) -> str:
    """How to call a method and what it returns; "" for an unknown name (as LAVA)."""
    entry = call.methods.entries.get(str(method_name))
    if entry is None:
        return ""
    return f"{entry.usage(str(method_name))}\n\n{inspect.getdoc(entry.function) or ''}".rstrip()


@METHODS.method("system.methodSignature")
async def method_signature(call: Call, method_name: str) -> str:
    """"undef" (signatures are not declared, as in LAVA); "" for an unknown name."""
    return "undef" if str(method_name) in call.methods.entries else ""


@METHODS.method("system.getCapabilities")
async def get_capabilities(call: Call) -> dict[str, Any]:
    """The introspection and fault-code specs this server follows."""
    return {
        "introspect": {"specUrl": "http://xmlrpc-c.sourceforge.net/introspection.html", "specVersion": 1},
        "faults_interop": {
            "specUrl": "http://xmlrpc-epi.sourceforge.net/specs/rfc.fault_codes.php",
            "specVersion": 20010516,
        },
    }


@METHODS.method("system.multicall")
async def multicall(call: Call, calls: list[Any]) -> list[Any]:
    """Run ``[{methodName, params}, ...]`` in order: ``[result]`` or a fault struct for each."""
    if not isinstance(calls, list):
        raise ParamError("system.multicall: expected an array of {methodName, params} structs")
    if len(calls) > MAX_MULTICALL:
        raise ParamError(f"system.multicall: at most {MAX_MULTICALL} calls at once, not {len(calls)}")
    answers: list[Any] = []
    for one in calls:
        try:
            name, params = _subcall(one)
            answers.append([await call.methods.dispatch(call, name, params)])
        except xmlrpc.client.Fault as fault:
            answers.append({"faultCode": fault.faultCode, "faultString": fault.faultString})
    return answers


def _subcall(one: Any) -> tuple[str, tuple[Any, ...]]:
    if not isinstance(one, dict) or set(one) != {"methodName", "params"}:
        raise xmlrpc.client.Fault(INVALID_PARAMS, "system.multicall: each call is a struct {methodName, params}")
    name, params = one["methodName"], one["params"]
    if not isinstance(name, str) or not isinstance(params, list):
        raise xmlrpc.client.Fault(INVALID_PARAMS, "system.multicall: methodName is a string, params an array")
    if name == "system.multicall":
        raise xmlrpc.client.Fault(INVALID_PARAMS, "system.multicall cannot be nested")
    return name, tuple(params)


# -- HTTP --------------------------------------------------------------------------------


def _response(payload: str) -> web.Response:
    return web.Response(body=payload.encode("utf-8"), content_type="application/xml", charset="utf-8")


async def handle(request: web.Request) -> web.Response:
    """One XML-RPC call: its answer, or a fault; HTTP errors only for the transport."""
    body = await request.read()  # HTTP 413 past client_max_size
    call = Call(request.app[SERVICE], request["user"], METHODS)
    try:
        if len(body) > PARSE_IN_THREAD:
            name, params = await asyncio.to_thread(parse_request, body)
        else:
            name, params = parse_request(body)
        result = await METHODS.dispatch(call, name, params)
        try:
            payload = xmlrpc.client.dumps((xml_safe(result),), methodresponse=True, allow_none=True)
        except (TypeError, OverflowError) as exc:
            LOG.exception("XML-RPC %s: cannot marshal the answer", name)
            raise xmlrpc.client.Fault(INTERNAL_ERROR, f"Internal Server Error: cannot marshal the answer: {exc}") from None
    except RequestError as exc:
        payload = xmlrpc.client.dumps(xmlrpc.client.Fault(exc.code, xml_safe(str(exc))), methodresponse=True)
    except xmlrpc.client.Fault as fault:
        fault.faultString = xml_safe(fault.faultString)
        payload = xmlrpc.client.dumps(fault, methodresponse=True, allow_none=True)
    return _response(payload)


def add_routes(app: web.Application) -> None:
    """``POST /RPC2`` and ``/RPC2/`` on the worker's application."""
    # importing them registers the scheduler.* and results.* methods
    from lava_dispatcher.worker import xmlrpc_lab, xmlrpc_methods

    assert xmlrpc_lab.METHODS is xmlrpc_methods.METHODS is METHODS
    app.router.add_route("POST", "/RPC2", handle)
    app.router.add_route("POST", "/RPC2/", handle)
