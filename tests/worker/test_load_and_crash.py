"""The issue's must-shows: (2) 200 jobs at once on 8 devices; (3) SIGKILL the worker mid-run.

Both use a real daemon process over HTTP and real ``lava-dispatch run``
children on simulated devices, with the fastest job there is (one user
command on the worker host), so that they measure the worker rather than
the board.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lava_dispatcher.log import read_records

from .helpers import Worker, job_yaml, write_devices

pytestmark = pytest.mark.slow
WorkerFactory = Callable[..., Worker]


def assert_one_job_at_a_time(jobs: list[dict]) -> None:
    """No two jobs overlap on a device (start and end as the worker recorded them)."""
    by_device = defaultdict(list)
    for job in jobs:
        by_device[job["actual_device"]].append((job["start_time"], job["end_time"], job["id"]))
    for device, spans in by_device.items():
        spans.sort()
        for (_start, end, first), (start, _end, second) in itertools.pairwise(spans):
            assert end <= start, f"{device}: job {second} started before job {first} ended"


def test_200_jobs_at_once_on_8_devices_all_complete(tmp_path: Path, worker: WorkerFactory) -> None:
    names = write_devices(tmp_path / "devices", 8)
    w = worker().start()
    w.login()
    with ThreadPoolExecutor(16) as pool:  # at once: 16 connections submitting together
        submitted = list(pool.map(lambda n: w.submit(job_yaml("hello", name=f"load {n}")), range(200)))
    ids = [i for ids in submitted for i in ids]
    assert sorted(ids) == list(range(1, 201))  # one id each, none twice
    jobs = list(w.wait_finished(ids, 300).values())
    assert [j["health"] for j in jobs] == ["Complete"] * 200
    assert sorted(j["description"] for j in jobs) == sorted(f"load {n}" for n in range(200))
    assert {j["actual_device"] for j in jobs} == set(names)
    assert_one_job_at_a_time(jobs)
    # each job ran once: one output directory each, one run in each log
    for job in jobs:
        logs = (w.state / "jobs" / str(job["id"]) / "output" / "logs.yaml").read_text()
        assert logs.count('"case": "job"') == 1
    assert len(list((w.state / "jobs").iterdir())) == 200
    assert all(d["state"] == "Idle" for d in w.device_list().values())


def test_a_killed_worker_loses_nothing_and_checks_its_devices(tmp_path: Path, worker: WorkerFactory) -> None:
    names = write_devices(tmp_path / "devices", 8)
    w = worker("--cancel-timeout", "5")
    (w.state / "health-checks").mkdir(parents=True)
    (w.state / "health-checks" / "sim.yaml").write_text(job_yaml("hello", name="health check"))
    w.start()
    w.login()
    w.wait_for(lambda: all(d["health"] == "Good" for d in w.device_list().values()), 60, "devices Good")
    long = [w.submit(job_yaml("ticker", name=f"long {n}", timeout=300))[0] for n in range(8)]
    w.wait_for(lambda: all(w.job(i)["state"] == "Running" and len(w.log_lines(i)) > 5 for i in long),
               60, "the 8 long jobs to run and log")  # fmt: skip
    queued = [w.submit(job_yaml("hello", name=f"queued {n}"))[0] for n in range(50)]
    assert {w.job(i)["state"] for i in queued} == {"Submitted"}

    w.kill()
    # what the jobs had written when the worker died (they go on writing: orphans)
    before = {i: (w.state / "jobs" / str(i) / "output" / "logs.yaml").read_text().splitlines() for i in long}

    w.start()
    everything = long + queued
    jobs = w.wait_finished(everything, 300)
    for i in long:
        job = jobs[str(i)]
        assert job["health"] == "Incomplete"
        assert "the worker stopped (killed or crashed) while this job was running" in job["failure_comment"]
        stored = w.log_lines(i)
        # every line written before the kill is in the stored log, in order, and the reason last
        assert stored[: len(before[i])] == before[i]
        assert stored == (w.state / "jobs" / str(i) / "output" / "logs.yaml").read_text().splitlines()
        assert "lava-worker: the worker stopped" in read_records(stored[-1:])[0]["msg"]
    assert [jobs[str(i)]["health"] for i in queued] == ["Complete"] * 50
    # every device that was running a long job is health-checked before running another job
    checks = [j for j in w.all_jobs() if j["health_check"] and j["id"] > max(queued)]
    assert sorted(j["actual_device"] for j in checks) == names
    assert all(j["health"] == "Complete" for j in checks)
    for check in checks:
        later = [jobs[str(i)] for i in queued if jobs[str(i)]["actual_device"] == check["actual_device"]]
        assert all(job["start_time"] >= check["end_time"] for job in later)
    assert all(d["health"] == "Good" for d in w.device_list().values())
    # nothing lost or run twice: every job id once, each queued job run once
    ids = [j["id"] for j in w.all_jobs()]
    assert len(ids) == len(set(ids)) == 8 + 8 + 8 + 50
    for i in queued:
        logs = (w.state / "jobs" / str(i) / "output" / "logs.yaml").read_text()
        assert logs.count('"case": "job"') == 1
    assert_one_job_at_a_time([j for j in w.all_jobs() if j["start_time"]])
    # and the orphans of the first worker are gone
    assert w.stop() == 0
