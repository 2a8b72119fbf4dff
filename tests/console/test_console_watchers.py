"""Kernel message watcher: LAVA's kinds, fatal at once, collection of traces, reset detection."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from console_helpers import fake_dut_argv

from lava_dispatcher import errors
from lava_dispatcher.console import ExpectTimeout, KernelMessage, KernelMessageWatcher, Watcher
from lava_dispatcher.timing import Interrupter

CUT_HERE_WARNING = """\
[   12.000000] ------------[ cut here ]------------
[   12.000001] WARNING: CPU: 1 PID: 42 at kernel/fork.c:100 copy_process+0x1/0x2
[   12.000002] Modules linked in:
[   12.000003] Call trace:
[   12.000004]  copy_process+0x1/0x2
[   12.000005] ---[ end trace 0000000000000000 ]---""".splitlines()


@pytest.fixture
def messages() -> list[KernelMessage]:
    return []


@pytest.fixture
def watcher(messages) -> KernelMessageWatcher:
    return KernelMessageWatcher(messages.append)


def feed(watcher: KernelMessageWatcher, lines, ts: float = 100.0) -> None:
    for offset, line in enumerate(lines):
        watcher.feed(line, ts + offset)


def test_is_a_watcher(watcher):
    assert isinstance(watcher, Watcher)


def test_panic_is_reported_at_once_with_its_line(watcher, messages):
    watcher.feed("[    1.0] ordinary boot line", 1.0)
    assert messages == []
    watcher.feed("[    9.1] Kernel panic - not syncing: VFS: Unable to mount root fs", 9.5)
    # at once, from feed itself: no waiting for the end of the panic
    assert messages == [
        KernelMessage(
            "panic", "[    9.1] Kernel panic - not syncing: VFS: Unable to mount root fs", True, 9.5
        )
    ]


def test_cut_here_block_is_collected_until_end_trace(watcher, messages):
    feed(watcher, CUT_HERE_WARNING[:-1])
    assert messages == []
    feed(watcher, CUT_HERE_WARNING[-1:], ts=200.0)
    assert len(messages) == 1
    message = messages[0]
    assert message.kind == "warning"  # classified from the text, as LAVA does
    assert message.fatal is False
    assert message.text == "\n".join(CUT_HERE_WARNING)
    assert message.ts == 100.0
    watcher.feed("normal output", 300.0)
    assert len(messages) == 1


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("[ 1.0] Unhandled fault: imprecise external abort (0x1406) at 0x0", "fault"),
        ("[ 1.0] BUG: KCSAN: data-race in foo / bar", "kcsan"),
        ("[ 1.0] BUG: KASAN: slab-out-of-bounds in foo+0x1/0x2", "kasan"),
        ("[ 1.0] BUG: KFENCE: use-after-free read in bar", "kfence"),
        ("[ 1.0] Internal error: Oops: 96000004 [#1] PREEMPT SMP", "oops"),
        ("[ 1.0] Oops - BUG: 0 [#1] SMP ARM", "oops"),
        ("[ 1.0] WARNING: CPU: 0 PID: 1 at drivers/x.c:1 probe+0x1/0x2", "warning"),
        ("[ 1.0] kernel BUG at mm/slub.c:123!", "bug"),
        ("[ 1.0] BUG: scheduling while atomic: swapper/0/0/0x00000002", "bug"),
        ("[ 1.0] invalid opcode: 0000 [#1] SMP PTI", "invalid opcode"),
    ],
)
def test_lava_kinds(watcher, messages, line, kind):
    watcher.feed(line, 5.0)
    watcher.feed("[ 1.1] next line of the report", 5.1)
    assert messages == []  # collecting
    watcher.feed("[ 1.2] ---[ end trace 1234abcd ]---", 5.2)
    assert [(m.kind, m.fatal, m.ts) for m in messages] == [(kind, False, 5.0)]
    assert messages[0].text.splitlines()[0] == line


def test_kasan_report_ends_at_its_line_of_equals(watcher, messages):
    feed(
        watcher,
        [
            "==================================================================",
            "BUG: KASAN: use-after-free in foo+0x10/0x20",
            "Read of size 8 at addr ffff0000 by task bar/1",
            "==================================================================",
            "after",
        ],
    )
    assert len(messages) == 1
    assert messages[0].kind == "kasan"
    assert messages[0].text.splitlines() == [
        "BUG: KASAN: use-after-free in foo+0x10/0x20",
        "Read of size 8 at addr ffff0000 by task bar/1",
        "==================================================================",
    ]


def test_collection_stops_at_30_lines(watcher, messages):
    watcher.feed("BUG: soft lockup - CPU#0 stuck for 22s!", 1.0)
    feed(watcher, [f"register dump {n}" for n in range(40)])
    assert len(messages) == 1
    assert len(messages[0].text.splitlines()) == 30


def test_a_quiet_console_ends_the_collection(messages):
    watcher = KernelMessageWatcher(messages.append, quiet_time=1.0)
    watcher.feed("BUG: sleeping function called from invalid context", 10.0)
    watcher.idle(10.5)
    assert messages == []
    watcher.idle(11.5)
    assert [m.kind for m in messages] == ["bug"]


def test_flush_reports_an_unfinished_message(watcher, messages):
    watcher.feed("WARNING: CPU: 0 PID: 1 at x.c:1", 1.0)
    watcher.flush()
    assert [m.kind for m in messages] == ["warning"]
    watcher.flush()
    assert len(messages) == 1


def test_a_panic_during_a_collection_is_reported_at_once(watcher, messages):
    feed(watcher, ["Internal error: Oops: 96000004 [#1] SMP", "pc : foo+0x1/0x2"])
    watcher.feed("Kernel panic - not syncing: Fatal exception", 50.0)
    assert [(m.kind, m.fatal) for m in messages] == [("oops", False), ("panic", True)]
    assert messages[0].text == "Internal error: Oops: 96000004 [#1] SMP\npc : foo+0x1/0x2"
    assert messages[1].text == "Kernel panic - not syncing: Fatal exception"


def test_a_panic_later_in_a_non_fatal_line_is_still_fatal(watcher, messages):
    watcher.feed("BUG: something; Kernel panic - not syncing: x", 1.0)
    assert [(m.kind, m.fatal) for m in messages] == [("panic", True)]


def test_disabled_watcher_ignores_kernel_messages(watcher, messages):
    watcher.enabled = False
    feed(watcher, ["Kernel panic - not syncing: x", *CUT_HERE_WARNING])
    assert messages == []


def test_reset_detection_is_off_by_default_and_fatal_when_armed(watcher, messages):
    banner = "U-Boot SPL 2023.04 (Apr 01 2023 - 00:00:00 +0000)"
    watcher.feed(banner, 1.0)
    watcher.feed("U-Boot 2023.04 (Apr 01 2023 - 00:00:00 +0000)", 1.1)
    assert messages == []  # expected while booting
    watcher.reset_detection = True
    watcher.feed(banner, 2.0)
    watcher.feed("U-Boot 2024.01-rc1 (Jan 01 2024)", 3.0)
    assert messages == [
        KernelMessage("DUT_has_reset", banner, True, 2.0),
        KernelMessage("DUT_has_reset", "U-Boot 2024.01-rc1 (Jan 01 2024)", True, 3.0),
    ]
    # armed but kernel checks off (ignore_kernel_messages): resets still count
    messages.clear()
    watcher.enabled = False
    watcher.feed("Kernel panic - not syncing: x", 4.0)
    watcher.feed(banner, 5.0)
    assert [m.kind for m in messages] == ["DUT_has_reset"]


def test_feeding_ordinary_lines_is_cheap(watcher, messages):
    lines = [
        f"[ {n}.000] ordinary console output line number {n} with some words" for n in range(20000)
    ]
    start = time.perf_counter()
    for line in lines:
        watcher.feed(line, 0.0)
    per_line = (time.perf_counter() - start) / len(lines)
    assert messages == []
    assert per_line < 50e-6  # about 1 us here; a generous bound


# -- on a real console ----------------------------------------------------------------

_CHATTY_PANIC = r"""
import sys
for n in range(2000):
    sys.stdout.write("[ %d.0] before the panic %d\n" % (n, n))
sys.stdout.write("[ 99.0] Kernel panic - not syncing: Attempted to kill init!\n")
for n in range(2000):
    sys.stdout.write("[ %d.5] after the panic %d\n" % (n, n))
sys.stdout.flush()
sys.stdin.read()
"""


def test_panic_fires_mid_output_before_the_next_line(resources, line_log):
    fired: list[tuple[KernelMessage, int]] = []

    def on_message(message: KernelMessage) -> None:
        # how many lines on_line had seen when the watcher fired
        fired.append((message, len(line_log.lines)))

    console = resources.console(
        resources.process([sys.executable, "-c", _CHATTY_PANIC]),
        line_log,
        watchers=[KernelMessageWatcher(on_message)],
    )
    console.start()
    line_log.wait_line("after the panic 1999")
    assert len(fired) == 1
    message, seen = fired[0]
    assert message.fatal and message.kind == "panic"
    assert message.text == "[ 99.0] Kernel panic - not syncing: Attempted to kill init!"
    # fired right after the panic line reached on_line, before any later line
    assert line_log.lines[seen - 1][0] == message.text
    assert line_log.lines[seen - 1][1] == message.ts


def test_panic_during_a_wait_interrupts_it_at_once(resources, line_log):
    interrupter = Interrupter()
    fired = threading.Event()

    def on_message(message: KernelMessage) -> None:
        if message.fatal:
            interrupter.post(errors.JobError(f"kernel {message.kind}: {message.text}"))
            fired.set()

    console = resources.console(
        resources.process(fake_dut_argv("--panic")),
        line_log,
        watchers=[KernelMessageWatcher(on_message)],
        interrupter=interrupter,
    )
    console.start()
    start = time.monotonic()
    with pytest.raises(errors.JobError, match="Kernel panic - not syncing: VFS"):
        console.expect(["login:"], 30)
    assert time.monotonic() - start < 2.0  # not the 30 s timeout
    assert fired.is_set()
    # the console goes on after the fault: the next line is there too
    line_log.wait_line("CPU: 0 PID: 1")
    with pytest.raises(ExpectTimeout):
        console.expect(["login:"], 0.05)
