"""The XML-RPC methods of the lab: ``scheduler.devices.*``, ``scheduler.device_types.*``
and ``scheduler.workers.*``, in LAVA's shapes (reference: api-surface.md §1.5).

This worker is the one worker of its lab, its devices are its device files,
and a device type is whatever type those files have; what LAVA's server
keeps in its database and this worker has no notion of (device owners and
groups, worker health) is answered as LAVA answers for a lab without them,
and a request to change it is refused with fault 400 rather than ignored.
"""

from __future__ import annotations

import xmlrpc.client
from typing import Any

from lava_dispatcher.worker.errors import BadRequest, NotAllowed, NotFound
from lava_dispatcher.worker.service import AUTH_REQUIRED
from lava_dispatcher.worker.store import DeviceRecord
from lava_dispatcher.worker.xmlrpc import METHODS, Call, as_flag, as_text, date_time


def _hostname(value: Any) -> str:
    return str(as_text(value, "hostname"))


async def _health_job(call: Call, device: DeviceRecord) -> bool:
    try:
        return (await call.service.device_type(device.device_type)).health_check
    except NotFound:  # a device whose file is gone has no type here any more
        return False


# -- scheduler.devices.* -------------------------------------------------------------------


@METHODS.method("scheduler.devices.list")
async def devices_list(call: Call, show_all: Any = False, offline_info: Any = False) -> list[dict[str, Any]]:
    """Devices by hostname: hostname, type, health, state, current_job, pipeline; retired
    ones only with ``show_all``."""
    as_flag(offline_info, "offline_info")
    return [
        {"hostname": d.hostname, "type": d.device_type, "health": d.health, "state": d.state,
         "current_job": d.current_job, "pipeline": True}
        for d in await call.service.devices(as_flag(show_all, "show_all"))
    ]  # fmt: skip


@METHODS.method("scheduler.devices.show")
async def devices_show(call: Call, hostname: Any) -> dict[str, Any]:
    """The device: hostname, device_type, health, state, health_job, description, pipeline,
    has_device_dict, worker, current_job, tags, permissions."""
    device = await call.service.device(_hostname(hostname))
    worker = await call.service.worker()
    return {
        "hostname": device.hostname, "device_type": device.device_type, "health": device.health,
        "state": device.state, "health_job": await _health_job(call, device),
        "description": device.description, "pipeline": True, "has_device_dict": device.present,
        "worker": worker.hostname, "current_job": device.current_job, "tags": sorted(device.tags),
        "permissions": [],
    }  # fmt: skip


@METHODS.method("scheduler.devices.update")
async def devices_update(
    call: Call,
    hostname: Any,
    worker_hostname: Any = None,
    user_name: Any = None,
    group_name: Any = None,
    public: Any = True,
    health: Any = None,
    description: Any = None,
    device_type: Any = None,
    reason: Any = None,
) -> None:
    """Change a device's health (GOOD, UNKNOWN, LOOPING, BAD, MAINTENANCE, RETIRED) and
    description (admin); nil leaves a value as it is. ``group_name`` and ``public`` are
    ignored, as in LAVA; a device's worker and type cannot change here (its file says)."""
    name = _hostname(hostname)
    worker = as_text(worker_hostname, "worker_hostname", True)
    if as_text(user_name, "user_name", True) is not None:
        raise BadRequest("Bad request: this worker does not record a device's physical owner (user_name).")
    if worker is not None and worker not in await call.service.workers():
        raise NotFound(f"Unable to find worker '{worker}'")
    await call.service.update_device(
        name, call.user, health=as_text(health, "health", True),
        description=as_text(description, "description", True),
        device_type=as_text(device_type, "device_type", True), reason=as_text(reason, "reason", True),
    )  # fmt: skip


@METHODS.method("scheduler.devices.get_dictionary")
async def devices_get_dictionary(call: Call, hostname: Any, render: Any = False, context: Any = None) -> Any:
    """The device file (base64), for a logged-in user: it is already the rendered
    dictionary, so ``render`` and ``context`` change nothing."""
    as_flag(render, "render")
    as_text(context, "context", True)
    if call.user is None:
        raise NotAllowed(AUTH_REQUIRED, anonymous=True)
    return xmlrpc.client.Binary((await call.service.device_dictionary(_hostname(hostname))).encode("utf-8"))


@METHODS.method("scheduler.devices.tags.list")
async def tags_list(call: Call, hostname: Any) -> list[str]:
    """The device's tags."""
    return sorted(await call.service.device_tags(_hostname(hostname)))


@METHODS.method("scheduler.devices.tags.add")
async def tags_add(call: Call, hostname: Any, name: Any) -> None:
    """Tag a device (admin)."""
    await call.service.add_device_tag(_hostname(hostname), as_text(name, "name"), call.user)


@METHODS.method("scheduler.devices.tags.delete")
async def tags_delete(call: Call, hostname: Any, name: Any) -> None:
    """Remove a tag from a device (admin)."""
    await call.service.delete_device_tag(_hostname(hostname), as_text(name, "name"), call.user)


# -- scheduler.device_types.* and scheduler.workers.* ------------------------------------------


@METHODS.method("scheduler.device_types.list")
async def device_types_list(call: Call, show_all: Any = False) -> list[dict[str, Any]]:
    """The types of this worker's devices: name, devices (how many), installed, template."""
    as_flag(show_all, "show_all")
    return [{"name": t.name, "devices": t.devices, "installed": True, "template": True}
            for t in await call.service.device_types()]  # fmt: skip


@METHODS.method("scheduler.workers.list")
async def workers_list(call: Call, show_all: Any = False) -> list[str]:
    """The workers' hostnames: this one."""
    as_flag(show_all, "show_all")
    return await call.service.workers()


@METHODS.method("scheduler.workers.show")
async def workers_show(call: Call, hostname: Any) -> dict[str, Any]:
    """The worker: hostname, description, state, health, devices, last_ping, job_limit,
    version, default_config, default_env, default_env_dut."""
    worker = await call.service.worker(_hostname(hostname))
    return {
        "hostname": worker.hostname, "description": "", "state": worker.state, "health": worker.health,
        "devices": worker.devices, "last_ping": date_time(worker.last_ping), "job_limit": worker.job_limit,
        "version": worker.version, "default_config": False, "default_env": False, "default_env_dut": False,
    }  # fmt: skip
