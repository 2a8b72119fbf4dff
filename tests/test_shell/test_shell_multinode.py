"""MultiNode helpers: requests on stdout, replies fed on stdin as the dispatcher types them."""

from __future__ import annotations

import re
import string
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .dut import (
    SCRIPTS,
    Group,
    Overlay,
    Shell,
    TestDef,
    build_overlay,
    run_runner,
    signals,
    uuid_of,
    write_stage,
)

#: "<LAVA_WAIT_DEBUG function what... <date>>", date as `date` prints it in the C locale
DEBUG = re.compile(
    r"^<(LAVA_[A-Z_]+)_DEBUG (?P<step>.*) \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4}>$"
)


def requests(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("<LAVA_MULTI_NODE> ")]


def debug_steps(output: str) -> list[str]:
    """'function what' of each debug line, without the date."""
    steps = []
    for line in output.splitlines():
        if "_DEBUG " in line:
            match = DEBUG.match(line)
            assert match, line
            steps.append(match.group("step"))
    return steps


def typed(reply: str) -> str:
    """A reply as it reaches the DUT: tty echo of our own prompt, the line, extra newlines."""
    return f"\n{reply}\n\n\n"


# ---------------------------------------------------------------- lava-send


def test_send(overlay: Overlay) -> None:
    proc = overlay.run(
        "lava-send", "ready", "ipv4=10.0.0.5", "port=80", "noise", "=x", "y=", "msg=two  words"
    )
    assert proc.returncode == 0
    assert requests(proc.stdout) == [
        "<LAVA_MULTI_NODE> <LAVA_SEND ready ipv4=10.0.0.5 port=80 msg=two words>"
    ]
    assert debug_steps(proc.stdout) == [
        "lava_multi_node_send preparing",
        "_lava_multi_node_send started",
        "_lava_multi_node_send finished",
        "lava_multi_node_send finished",
    ]
    assert all(
        line.startswith("<LAVA_SEND_DEBUG ") for line in proc.stdout.splitlines() if "DEBUG" in line
    )


def test_send_without_data_and_no_globbing(overlay: Overlay, tmp_path: Path) -> None:
    (tmp_path / "a-file").touch()
    proc = overlay.run("lava-send", "go")
    assert requests(proc.stdout) == ["<LAVA_MULTI_NODE> <LAVA_SEND go>"]
    star = overlay.run("lava-send", "go", "pattern=*")
    assert requests(star.stdout) == ["<LAVA_MULTI_NODE> <LAVA_SEND go pattern=*>"]


@pytest.mark.parametrize("script", ["lava-send", "lava-wait", "lava-wait-all", "lava-sync"])
@pytest.mark.parametrize("args", [[], [""], ["key=value"]], ids=["none", "empty", "pair-as-id"])
def test_bad_message_id(overlay: Overlay, script: str, args: list[str]) -> None:
    proc = overlay.run(script, *args, stdin=typed("<LAVA_WAIT_COMPLETE>"))
    assert proc.returncode == 1
    assert requests(proc.stdout) == []
    assert "error messageID" in proc.stdout


# ---------------------------------------------------------------- lava-wait, lava-wait-all, lava-sync


def test_wait_stores_the_reply(fresh_overlay: Overlay) -> None:
    stdin = (
        "some console noise\n"
        "<LAVA_WAIT_ALL_COMPLETE 9:not=mine>\n"  # another helper's reply is not ours
        "root@dut:~# <LAVA_WAIT_COMPLETE 1235:ipv4=10.0.0.7 1235:msg=hello world 1236:port=80>\n\n"
    )
    proc = fresh_overlay.run("lava-wait", "server-ready", stdin=stdin)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert requests(proc.stdout) == ["<LAVA_MULTI_NODE> <LAVA_WAIT server-ready>"]
    assert (
        fresh_overlay.cache.read_text()
        == "1235:ipv4=10.0.0.7\n1235:msg=hello world\n1236:port=80\n"
    )
    assert debug_steps(proc.stdout) == [
        "lava_multi_node_send preparing",
        "_lava_multi_node_send started",
        "_lava_multi_node_send finished",
        "lava_multi_node_send finished",
        "lava_multi_node_wait_for_message starting to wait",
        f"_lava_multi_node_process_message save message to {fresh_overlay.cache}",
        "lava_multi_node_wait_for_message waiting over",
    ]


def test_each_reply_replaces_the_cache(fresh_overlay: Overlay) -> None:
    fresh_overlay.run("lava-wait", "one", stdin=typed("<LAVA_WAIT_COMPLETE 1:a=1 1:b=2>"))
    fresh_overlay.run("lava-wait", "two", stdin=typed("<LAVA_WAIT_COMPLETE 2:c=3>"))
    assert fresh_overlay.cache.read_text() == "2:c=3\n"


def test_wait_all_with_role(fresh_overlay: Overlay) -> None:
    reply = "<LAVA_WAIT_ALL_COMPLETE 1235:ip=10.0.0.2 1236:ip=10.0.0.3>"
    proc = fresh_overlay.run("lava-wait-all", "booted", "client", stdin=typed(reply))
    assert proc.returncode == 0
    assert requests(proc.stdout) == ["<LAVA_MULTI_NODE> <LAVA_WAIT_ALL booted client>"]
    assert fresh_overlay.cache.read_text() == "1235:ip=10.0.0.2\n1236:ip=10.0.0.3\n"
    plain = fresh_overlay.run("lava-wait-all", "booted", stdin=typed("<LAVA_WAIT_ALL_COMPLETE>"))
    assert requests(plain.stdout) == ["<LAVA_MULTI_NODE> <LAVA_WAIT_ALL booted>"]


def test_sync(fresh_overlay: Overlay) -> None:
    fresh_overlay.run("lava-wait", "w", stdin=typed("<LAVA_WAIT_COMPLETE 1:a=b>"))
    proc = fresh_overlay.run("lava-sync", "barrier", stdin=typed("<LAVA_SYNC_COMPLETE>"))
    assert proc.returncode == 0
    assert requests(proc.stdout) == ["<LAVA_MULTI_NODE> <LAVA_SYNC barrier>"]
    # As in LAVA, every reply rewrites the cache, an empty one included.
    assert not fresh_overlay.cache.exists()


@pytest.mark.parametrize(
    ("script", "reply"),
    [
        ("lava-sync", "<LAVA_SYNC_COMPLETE nack>"),
        ("lava-wait", "<LAVA_WAIT_COMPLETE nack>"),
        ("lava-wait-all", "<LAVA_WAIT_ALL_COMPLETE nack>"),
    ],
)
def test_nack_is_reported_but_does_not_fail(
    fresh_overlay: Overlay, script: str, reply: str
) -> None:
    api = reply[1:].split("_COMPLETE")[0]
    proc = fresh_overlay.run(script, "msg", stdin=typed(reply))
    assert proc.returncode == 0
    assert f"Error:no-response nack, Exit from {api}!" in proc.stdout.splitlines()
    assert not fresh_overlay.cache.exists()


def test_unrecognised_items_are_warned_about(fresh_overlay: Overlay) -> None:
    proc = fresh_overlay.run("lava-wait", "m", stdin=typed("<LAVA_WAIT_COMPLETE junk 7:k=v>"))
    assert "Warning:unrecognized message junk" in proc.stdout
    assert fresh_overlay.cache.read_text() == "7:k=v\n"


@pytest.mark.parametrize("script", ["lava-wait", "lava-wait-all", "lava-sync"])
def test_end_of_input_without_reply_fails(fresh_overlay: Overlay, script: str) -> None:
    proc = fresh_overlay.run(script, "never", stdin="nothing for us\n")
    assert proc.returncode == 1
    assert "input ended" in proc.stdout


PAIR_KEY = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=8)
PAIR_VALUE = st.text(
    alphabet=string.ascii_letters + string.digits + ".:/-_ ", min_size=1, max_size=12
).filter(lambda v: v.strip() == v and "  " not in v and not re.search(r" \d+:", f" {v}"))


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=st.lists(
        st.tuples(st.sampled_from(["1234", "1235", "98"]), PAIR_KEY, PAIR_VALUE), max_size=5
    )
)
def test_reply_items_property(fresh_overlay: Overlay, items: list[tuple[str, str, str]]) -> None:
    payload = "".join(f" {job}:{key}={value}" for job, key, value in items)
    proc = fresh_overlay.run("lava-wait", "prop", stdin=typed(f"<LAVA_WAIT_COMPLETE{payload}>"))
    assert proc.returncode == 0
    stored = fresh_overlay.cache.read_text().splitlines() if fresh_overlay.cache.exists() else []
    assert stored == [f"{job}:{key}={value}" for job, key, value in items]


# ---------------------------------------------------------------- group, role, self, config


def test_group_role_self(overlay: Overlay) -> None:
    assert overlay.run("lava-group").stdout == "1234\tserver\n1235\tclient\n"
    assert overlay.run("lava-group", "client").stdout == "1235\n"
    missing = overlay.run("lava-group", "observer")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert overlay.run("lava-role").stdout == "server\n"
    assert overlay.run("lava-role", "list").stdout == "server\nclient\n"
    assert overlay.run("lava-self").stdout == "1234\n"


def test_group_with_several_jobs_per_role_and_old_format(shell: Shell, tmp_path: Path) -> None:
    group = Group(members={"\\t10": "db", "\\t11": "web", "\\t12": "web"}, role="web", job_id="11")
    overlay = build_overlay(tmp_path, shell, group=group)
    assert overlay.run("lava-group", "web").stdout == "11\n12\n"
    assert overlay.run("lava-role", "list").stdout == "db\nweb\nweb\n"


def test_echo_config(overlay: Overlay) -> None:
    none = overlay.run("lava-echo-config")
    assert (none.returncode, none.stdout) == (1, "no shared config\n")
    config = {"LAVA_SHARED_CONFIG": "switch 10.0.0.1\\nrouter 10.0.0.254\\nswitch 10.0.0.2"}
    assert overlay.run("lava-echo-config", env=config).stdout == (
        "switch 10.0.0.1\nrouter 10.0.0.254\nswitch 10.0.0.2\n"
    )
    assert overlay.run("lava-echo-config", "switch", env=config).stdout == "10.0.0.1\n10.0.0.2\n"
    missing = overlay.run("lava-echo-config", "modem", env=config)
    assert (missing.returncode, missing.stdout) == (1, "no matching devices\n")


def test_vm_helpers(fresh_overlay: Overlay) -> None:
    start = fresh_overlay.run("lava-start-vms", env={"_LAVA_VM_GROUP_HOST_IP": "192.168.1.9"})
    assert requests(start.stdout) == [
        "<LAVA_MULTI_NODE> <LAVA_SEND lava_vm_start host_ip=192.168.1.9>"
    ]
    done = fresh_overlay.run(
        "lava-wait-for-vms", stdin=typed("<LAVA_WAIT_ALL_COMPLETE 1240:done=yes>")
    )
    assert done.returncode == 0
    assert requests(done.stdout) == [
        "<LAVA_MULTI_NODE> <LAVA_SEND lava_vm_stop>",
        "<LAVA_MULTI_NODE> <LAVA_WAIT_ALL lava_vm_stop>",
    ]


def test_defaults_without_injected_variables(shell: Shell, tmp_path: Path) -> None:
    """Run straight from the source tree: the library is found next to the script, no debug."""

    proc = subprocess.run(
        [*shell.argv, str(SCRIPTS / "multi_node" / "lava-send"), "hello", "k=v"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, "<LAVA_MULTI_NODE> <LAVA_SEND hello k=v>\n")


# ---------------------------------------------------------------- through the runner


def test_runner_passes_the_console_to_multinode_helpers(fresh_overlay: Overlay) -> None:
    cache = fresh_overlay.cache
    test = TestDef(
        name="multinode",
        steps=[
            "lava-send ready ipv4=10.0.0.5",
            "lava-wait peer-ready",
            f"lava-test-case got-peer --shell grep -q 1235:ipv4=10.0.0.6 {cache}",
            "lava-sync done",
        ],
    )
    stage = write_stage(fresh_overlay, 0, [test])
    stdin = typed("<LAVA_WAIT_COMPLETE 1235:ipv4=10.0.0.6>") + typed("<LAVA_SYNC_COMPLETE>")
    proc = run_runner(fresh_overlay, stage, stdin=stdin)
    uuid = uuid_of(stage, "0_multinode")
    assert [line for line in signals(proc.stdout) if "_DEBUG" not in line] == [
        f"<LAVA_SIGNAL_STARTRUN 0_multinode {uuid}>",
        "<LAVA_MULTI_NODE> <LAVA_SEND ready ipv4=10.0.0.5>",
        "<LAVA_MULTI_NODE> <LAVA_WAIT peer-ready>",
        "<LAVA_SIGNAL_STARTTC got-peer>",
        "<LAVA_SIGNAL_ENDTC got-peer>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=got-peer RESULT=pass>",
        "<LAVA_MULTI_NODE> <LAVA_SYNC done>",
        f"<LAVA_SIGNAL_ENDRUN 0_multinode {uuid}>",
        "<LAVA_TEST_RUNNER EXIT>",
    ]


@pytest.mark.parametrize("pair", ["my-key=1", "a.b=x", "clé=v", "k+=1"])
def test_send_refuses_a_bad_key_on_the_dut(overlay: Overlay, pair: str) -> None:
    proc = overlay.run("lava-send", "ready", "ok=1", pair)
    assert proc.returncode == 1
    assert requests(proc.stdout) == []  # nothing reaches the dispatcher
    key = pair.split("=")[0]
    assert f"lava-send: invalid key '{key}' in '{pair}'" in proc.stderr
    assert "message ready not sent" in proc.stderr
