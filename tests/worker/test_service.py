"""The service API as the XML-RPC layer will call it: a daemon in this process, real job children."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from lava_dispatcher.worker import auth
from lava_dispatcher.worker.config import load_config
from lava_dispatcher.worker.daemon import Daemon
from lava_dispatcher.worker.errors import BadRequest, InvalidJob, NotAllowed, NotFound
from lava_dispatcher.worker.service import Service
from lava_dispatcher.worker.store import JobRecord, UserRecord

from .helpers import job_yaml, kill_processes_naming, write_devices


def run_daemon(tmp_path: Path, body: Callable[[Daemon, Service], Awaitable[None]]) -> None:
    write_devices(tmp_path / "devices", 2)
    config = load_config(None, {"state_dir": tmp_path / "state", "devices": tmp_path / "devices",
                                "listen": "127.0.0.1:0", "name": "lab-1"})  # fmt: skip

    async def main() -> None:
        daemon = Daemon(config)
        await daemon.start()
        try:
            await body(daemon, daemon.service)
        finally:
            await daemon.stop("the test is over")

    try:
        asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        kill_processes_naming(str(tmp_path))


async def finished(service: Service, job_id: str, user: UserRecord) -> JobRecord:
    """Wait for a job to finish (the test's own polling; the daemon does not poll)."""
    for _ in range(600):
        job = await service.job(job_id, user)
        if job.state == "Finished":
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_the_service_api(tmp_path: Path, bytecode: None) -> None:
    async def body(daemon: Daemon, service: Service) -> None:
        assert daemon.store is not None
        auth.add_user(daemon.store, "root", admin=True)
        auth.add_user(daemon.store, "bob")
        root, bob = daemon.store.user("root"), daemon.store.user("bob")
        assert root is not None and bob is not None
        assert await service.whoami(bob) == "bob" and await service.whoami(None) is None
        assert (await service.version()).startswith("2026.07")
        assert await service.workers() == ["lab-1"]
        assert (await service.worker()).devices == ["fast-01", "fast-02"]
        (sim,) = await service.device_types()
        assert (sim.name, sim.devices, sim.health_check) == ("sim", 2, False)

        # a job runs; its log, results and definition are there
        (job_id,) = await service.submit(job_yaml("hello"), bob)
        job = await finished(service, job_id, bob)
        assert job.health == "Complete"
        piece = await service.job_log(job_id, None, 0, 3)
        assert piece.finished and piece.count == 3 and piece.text.count("\n") == 3
        assert await service.job_suites(job_id, None) == ["lava"]
        assert [r.name for r in await service.job_results(job_id, None, "lava", "job")] == ["job"]
        with pytest.raises(NotFound, match="Specified test suite not found"):
            await service.job_results(job_id, None, "0_nothing")
        assert await service.job_definition(job_id, None) == job_yaml("hello")
        assert [j.id for j in await service.jobs(None, state="finished", health="COMPLETE")] == [1]
        with pytest.raises(BadRequest, match="Invalid state 'done'"):
            await service.jobs(None, state="done")
        (again,) = await service.resubmit(job_id, bob)
        assert again == "2"
        await finished(service, again, bob)

        # Maintenance takes a device out; tags and pinning choose one
        await service.set_device_health("fast-01", "maintenance", root, "new cable")
        with pytest.raises(NotAllowed):
            await service.set_device_health("fast-02", "MAINTENANCE", bob)
        with pytest.raises(BadRequest):
            await service.set_device_health("fast-02", "broken", root)
        with pytest.raises(NotFound, match="Device 'nope' was not found"):
            await service.device("nope")
        with pytest.raises(InvalidJob, match="No device of type 'sim' has the tags usb"):
            await service.submit(job_yaml("hello", tags=["usb"]), bob)
        await service.add_device_tag("fast-01", "usb", root)
        (tagged,) = await service.submit(job_yaml("hello", tags=["usb"]), bob)
        (pinned,) = await service.submit(job_yaml("hello"), root, device="fast-02")
        assert (await finished(service, pinned, root)).actual_device == "fast-02"
        assert (await service.job(tagged, bob)).state == "Submitted"  # fast-01 is in Maintenance
        await service.set_device_health("fast-01", "Good", root)
        assert (await finished(service, tagged, bob)).actual_device == "fast-01"
        assert (await service.device("fast-01")).health_reason == "set by root"
        with pytest.raises(NotAllowed, match="may not pin"):
            await service.submit(job_yaml("hello"), bob, device="fast-01")

        # cancel: one's own jobs only; anonymous must log in
        (mine,) = await service.submit(job_yaml("ticker"), root)
        with pytest.raises(NotAllowed, match="not theirs"):
            await service.cancel(mine, bob)
        with pytest.raises(NotAllowed) as anonymous:
            await service.cancel(mine, None)
        assert anonymous.value.anonymous and anonymous.value.fault_code == 401
        await service.cancel(mine, root)
        assert (await finished(service, mine, root)).health == "Canceled"
        with pytest.raises(NotFound, match="Job '99' was not found"):
            await service.job("99", root)
        assert await service.validate(job_yaml("hello")) == []
        with pytest.raises(InvalidJob):
            await service.validate(job_yaml("nope"))

    run_daemon(tmp_path, body)
