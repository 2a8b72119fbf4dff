"""send_file(): files typed into a simulated DUT's shell as base64, verified there.

The simulated DUT's shell is a real shell on this host (``sim serve`` on a
pty, no login), so the destination is a path in the test's tmp directory and
the result is compared byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from lava_dispatcher import errors
from lava_dispatcher.console import Console, ExpectTimeout, ProcessTransport, ShellSession
from lava_dispatcher.console.transfer import (
    DELIMITER,
    MAX_COMMAND,
    TransferError,
    TransferResult,
    cksum,
    send_file,
)
from lava_dispatcher.sim import child_env, run_command
from lava_dispatcher.timing import Interrupter

from .conftest import FAST, PROMPT, DataNoise, random_file, tool_dir


def leftovers(dest: Path) -> list[str]:
    return [p.name for p in dest.parent.iterdir() if p.name.startswith(dest.name + ".")]


@pytest.mark.parametrize("size", [1_000_000, 100, 0], ids=["1MB", "100B", "empty"])
def test_file_arrives_exact(sim_shell, tmp_path, size):
    dut = sim_shell()
    source = random_file(tmp_path / "source.bin", size, seed=size)
    dest = tmp_path / "on-dut" / "overlay.tar.gz"
    dest.parent.mkdir()
    seen: list[tuple[int, int]] = []

    result = send_file(
        dut.shell, source, str(dest), timeout=60, progress=lambda d, t: seen.append((d, t))
    )

    assert dest.read_bytes() == source.read_bytes()
    assert isinstance(result, TransferResult)
    assert result.bytes == size
    assert result.algorithm == "sha256"
    assert result.checksum == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (result.retries, result.recoveries) == (0, 0)
    assert result.seconds > 0
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert all(total == size for _, total in seen)
    if size:
        assert seen[-1] == (size, size)
    assert leftovers(dest) == []  # no .part, no .chunk
    # the shell is left at its prompt, ready for the next command
    assert dut.shell.run("echo still here", timeout=10).output == "still here"


def test_existing_destination_is_replaced(sim_shell, tmp_path):
    dut = sim_shell()
    source = random_file(tmp_path / "source.bin", 5000, seed=1)
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"old content, longer than nothing" * 1000)
    send_file(dut.shell, source, str(dest), timeout=30)
    assert dest.read_bytes() == source.read_bytes()


def test_awkward_destination_path(sim_shell, tmp_path):
    """Spaces, quotes and shell characters in the path are quoted."""
    dut = sim_shell()
    source = random_file(tmp_path / "source.bin", 3000, seed=2)
    folder = tmp_path / "it's a $dir; `x`"
    folder.mkdir()
    dest = folder / "a b*.bin"
    send_file(dut.shell, source, str(dest), timeout=30)
    assert dest.read_bytes() == source.read_bytes()


def test_typed_lines_fit_a_canonical_tty(sim_shell, tmp_path):
    dut = sim_shell()
    source = random_file(tmp_path / "source.bin", 200_000, seed=3)
    send_file(dut.shell, source, str(tmp_path / "dest.bin"), timeout=60)
    lines = dut.tap.typed_lines()
    assert max(len(line) for line in lines) <= MAX_COMMAND < 1024
    data = [line for line in lines if line and b" " not in line and line != DELIMITER.encode()]
    assert data and max(len(line) for line in data) == 76
    # the data is reported to on_input once per chunk, not line by line
    assert any("lines of base64" in text for text in dut.typed)
    assert len(dut.typed) < 30


def test_report_copies_in_the_echo_are_not_results(sim_shell, tmp_path):
    """The typed command shows the report's printf format, never the report."""
    dut = sim_shell()
    source = random_file(tmp_path / "source.bin", 1000, seed=4)
    send_file(dut.shell, source, str(tmp_path / "dest.bin"), timeout=30)
    echoed = [line for line in dut.lines if "printf" in line and "base64 -d" in line]
    assert echoed, "the DUT echoes what is typed"
    assert all("<@X@" not in line for line in echoed)


def test_throughput_over_pty(sim_shell, tmp_path, record_property, capsys):
    """Measure bytes/s to the simulated DUT (no baud limit: a pty)."""
    dut = sim_shell()
    size = 2_000_000
    source = random_file(tmp_path / "source.bin", size, seed=5)
    result = send_file(dut.shell, source, str(tmp_path / "dest.bin"), timeout=120)
    assert (tmp_path / "dest.bin").read_bytes() == source.read_bytes()
    record_property("bytes_per_second", round(result.rate))
    with capsys.disabled():
        print(
            f"\n[transfer] {size} bytes over a pty to the simulated DUT (/bin/sh): "
            f"{result.seconds:.2f} s, {result.rate / 1000:.0f} kB/s"
        )
    assert result.rate > 20_000  # loose: a slow CI machine still passes


def test_throughput_at_115200_baud(sim_shell, tmp_path, record_property, capsys):
    """A serial line at 115200 baud (the echo paces the transfer)."""
    dut = sim_shell(baud=115200)
    size = 30_000
    source = random_file(tmp_path / "source.bin", size, seed=6)
    result = send_file(dut.shell, source, str(tmp_path / "dest.bin"), timeout=60)
    assert (tmp_path / "dest.bin").read_bytes() == source.read_bytes()
    record_property("bytes_per_second", round(result.rate))
    with capsys.disabled():
        print(
            f"\n[transfer] {size} bytes at 115200 baud: {result.seconds:.2f} s, "
            f"{result.rate / 1000:.1f} kB/s (line limit 11.5 kB/s raw, "
            f"{11520 * 3 / 4 / 1000:.1f} kB/s of base64 payload)"
        )
    assert result.rate > 11520 * 3 / 4 * 0.5


def test_busybox_shell(sim_shell, tmp_path, capsys):
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    shell_link = tmp_path / "bb" / "sh"
    shell_link.parent.mkdir()
    shell_link.symlink_to(busybox)  # busybox ash, with its own applets
    dut = sim_shell(shell=str(shell_link))
    assert "BusyBox" in dut.shell.run("sh --help 2>&1 | head -n 1", timeout=10).output
    source = random_file(tmp_path / "source.bin", 300_000, seed=7)
    result = send_file(dut.shell, source, str(tmp_path / "dest.bin"), timeout=120)
    assert (tmp_path / "dest.bin").read_bytes() == source.read_bytes()
    assert result.algorithm == "sha256"
    with capsys.disabled():
        print(f"\n[transfer] busybox ash: {result.rate / 1000:.0f} kB/s")


def test_over_a_spawned_sim_run(tmp_path):
    """The console is a spawned `sim run` process (like QEMU) instead of a pty."""
    transport = ProcessTransport(run_command(no_login=True, **FAST), env=child_env())
    console = Console(transport, name="dut", on_line=lambda text, ts: None)
    try:
        console.start()
        shell = ShellSession(console, prompts=[PROMPT])
        shell.wait_for_prompt(30)
        source = random_file(tmp_path / "source.bin", 100_000, seed=8)
        send_file(shell, source, str(tmp_path / "dest.bin"), timeout=60)
        assert (tmp_path / "dest.bin").read_bytes() == source.read_bytes()
    finally:
        console.close()


# -- line noise ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "knobs",
    [
        {"garble_rate": 0.01, "seed": 11},
        {"garble_rate": 0.005, "drop_rate": 0.005, "seed": 12},
    ],
    ids=["garbled", "garbled+dropped"],
)
def test_noisy_output_still_exact(sim_shell, tmp_path, knobs):
    """Characters from the DUT are garbled or lost (echo, reports, prompts):
    lost reports are recovered by asking the DUT, and the file is exact."""
    dut = sim_shell(**knobs)
    source = random_file(tmp_path / "source.bin", 400_000, seed=13)
    dest = tmp_path / "dest.bin"
    result = send_file(dut.shell, source, str(dest), timeout=120, chunk_size=8192, idle_timeout=0.5)
    assert dest.read_bytes() == source.read_bytes()
    assert result.checksum == hashlib.sha256(source.read_bytes()).hexdigest()


def test_very_noisy_output_fails_cleanly_or_is_exact(sim_shell, tmp_path):
    """When the reports are unreadable the transfer fails: never a wrong file."""
    dut = sim_shell(garble_rate=0.08, seed=14)
    source = random_file(tmp_path / "source.bin", 60_000, seed=15)
    dest = tmp_path / "dest.bin"
    try:
        send_file(dut.shell, source, str(dest), timeout=60, idle_timeout=0.3)
    except TransferError as exc:
        assert "bytes verified on the DUT" in str(exc)
        # it may have failed after the rename, unable to read the confirmation
        assert not dest.exists() or dest.read_bytes() == source.read_bytes()
    else:
        assert dest.read_bytes() == source.read_bytes()


def test_corrupted_chunks_are_resent(sim_shell, tmp_path):
    """Typed data damaged on the way to the DUT: the DUT's checksum of the
    chunk differs, the chunk is dropped and typed again."""
    dut = sim_shell()
    noise = DataNoise(rate=4e-5, seed=1)
    dut.tap.damage = noise
    source = random_file(tmp_path / "source.bin", 200_000, seed=16)
    dest = tmp_path / "dest.bin"
    result = send_file(dut.shell, source, str(dest), timeout=120, chunk_size=8192, idle_timeout=1)
    assert noise.damaged > 0
    assert result.retries > 0
    assert dest.read_bytes() == source.read_bytes()
    assert leftovers(dest) == []
    retyped = [text for text in dut.typed if f"<<'{DELIMITER}'" in text]
    assert len(retyped) == 25 + result.retries  # 200000 / 8192 chunks, plus the resends


def test_persistent_corruption_raises(sim_shell, tmp_path):
    dut = sim_shell()
    dut.tap.damage = DataNoise(rate=0.01, seed=2)  # every chunk is damaged
    source = random_file(tmp_path / "source.bin", 100_000, seed=17)
    dest = tmp_path / "dest.bin"
    with pytest.raises(TransferError) as info:
        send_file(dut.shell, source, str(dest), timeout=60, idle_timeout=1)
    assert isinstance(info.value, errors.InfrastructureError)
    assert "failed verification 3 times" in str(info.value)
    assert info.value.done == 0 and info.value.total == 100_000
    assert not dest.exists()
    assert leftovers(dest) == []  # the part file was removed
    dut.tap.damage = None
    assert dut.shell.run("echo ok", timeout=10).output == "ok"


def test_mangled_delimiter_is_recovered(sim_shell, tmp_path):
    """The here-document's delimiter arrives damaged: the shell keeps reading
    the here-document; the transfer notices the silence, ends it, and types
    the chunk again."""
    dut = sim_shell()
    damaged: list[bytes] = []

    def damage(data: bytes) -> bytes:
        end = f"\n{DELIMITER}\n".encode()
        if not damaged and data.endswith(end):
            damaged.append(data)
            return data[: -len(end)] + b"\nLAVA_XFER_EN?\n"
        return data

    dut.tap.damage = damage
    source = random_file(tmp_path / "source.bin", 20_000, seed=18)
    dest = tmp_path / "dest.bin"
    result = send_file(dut.shell, source, str(dest), timeout=60, chunk_size=8192, idle_timeout=0.5)
    assert damaged
    assert result.recoveries >= 1 and result.retries >= 1
    assert dest.read_bytes() == source.read_bytes()


def test_unbalanced_quote_is_recovered(sim_shell, tmp_path):
    """A command line arrives with a quote damaged: the shell waits for the
    quote's end for ever; the transfer abandons the line with ^C."""
    dut = sim_shell()
    count: list[int] = []

    def damage(data: bytes) -> bytes:
        if b"base64 -d" in data:
            count.append(1)
            if len(count) == 2:
                return data.replace(f"<<'{DELIMITER}'".encode(), f"<<'{DELIMITER}x".encode())
        return data

    dut.tap.damage = damage
    source = random_file(tmp_path / "source.bin", 30_000, seed=19)
    dest = tmp_path / "dest.bin"
    result = send_file(dut.shell, source, str(dest), timeout=60, chunk_size=8192, idle_timeout=0.5)
    assert result.recoveries >= 2
    assert dest.read_bytes() == source.read_bytes()
    assert any(b"\x03" in write for write in dut.tap.writes)


# -- failures -----------------------------------------------------------------------------


def test_missing_directory(sim_shell, tmp_path):
    dut = sim_shell()
    source = random_file(tmp_path / "source.bin", 1000)
    started = time.monotonic()
    with pytest.raises(TransferError) as info:
        send_file(dut.shell, source, str(tmp_path / "nowhere" / "dest.bin"), timeout=30)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "cannot write" in message and "nowhere/dest.bin.part" in message
    assert "nonexistent" in message or "No such file" in message  # the shell's own words
    assert dut.shell.run("echo ok", timeout=10).output == "ok"


def test_unwritable_destination(sim_shell, tmp_path):
    dut = sim_shell()
    source = random_file(tmp_path / "source.bin", 1000)
    if os.geteuid() == 0:
        dest = "/sys/lava-dispatcher-transfer-test.bin"  # sysfs: no new files, even for root
    else:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
        dest = str(folder / "dest.bin")
    with pytest.raises(TransferError, match="cannot write"):
        send_file(dut.shell, source, dest, timeout=30)


def test_destination_is_a_directory(sim_shell, tmp_path):
    dut = sim_shell()
    source = random_file(tmp_path / "source.bin", 1000)
    (tmp_path / "folder").mkdir()
    with pytest.raises(TransferError, match="is a directory"):
        send_file(dut.shell, source, str(tmp_path / "folder"), timeout=30)
    assert leftovers(tmp_path / "folder") == []


def test_no_base64_on_the_dut(sim_shell, tmp_path, monkeypatch):
    tools = tool_dir(tmp_path / "bin", ["cat", "wc", "mv", "rm", "dd", "sha256sum"])
    monkeypatch.setenv("PATH", str(tools))
    dut = sim_shell(shell="/bin/sh")
    source = random_file(tmp_path / "source.bin", 1000)
    with pytest.raises(TransferError, match="base64"):
        send_file(dut.shell, source, str(tmp_path / "dest.bin"), timeout=30)


@pytest.mark.parametrize("tool,algorithm", [("md5sum", "md5"), ("cksum", "cksum")])
def test_checksum_fallbacks(sim_shell, tmp_path, monkeypatch, tool, algorithm):
    """No sha256sum on the DUT: md5sum, then cksum."""
    tools = tool_dir(tmp_path / "bin", ["cat", "wc", "mv", "rm", "dd", "base64", tool])
    monkeypatch.setenv("PATH", str(tools))
    dut = sim_shell(shell="/bin/sh")
    source = random_file(tmp_path / "source.bin", 120_000, seed=20)
    dest = tmp_path / "dest.bin"
    result = send_file(dut.shell, source, str(dest), timeout=60)
    assert result.algorithm == algorithm
    assert dest.read_bytes() == source.read_bytes()
    if tool == "md5sum":
        assert result.checksum == hashlib.md5(source.read_bytes()).hexdigest()
    else:
        assert result.checksum == cksum(source.read_bytes())


def test_no_checksum_tool(sim_shell, tmp_path, monkeypatch):
    tools = tool_dir(tmp_path / "bin", ["cat", "wc", "mv", "rm", "dd", "base64"])
    monkeypatch.setenv("PATH", str(tools))
    dut = sim_shell(shell="/bin/sh")
    source = random_file(tmp_path / "source.bin", 1000)
    with pytest.raises(TransferError, match="none of sha256sum, md5sum, cksum"):
        send_file(dut.shell, source, str(tmp_path / "dest.bin"), timeout=30)


def test_timeout_says_how_far_it_got(sim_shell, tmp_path):
    """A slow line (the echo at 100000 baud) and a short timeout."""
    dut = sim_shell(baud=100_000)
    source = random_file(tmp_path / "source.bin", 100_000, seed=21)
    started = time.monotonic()
    with pytest.raises(TransferError) as info:
        send_file(dut.shell, source, str(tmp_path / "dest.bin"), timeout=3.0, chunk_size=8192)
    elapsed = time.monotonic() - started
    assert 3.0 <= elapsed < 5.0
    error = info.value
    assert isinstance(error.__cause__, ExpectTimeout)
    assert 0 < error.done < 100_000
    assert f"{error.done} of 100000 bytes were verified" in str(error)
    assert "timed out after 3 seconds" in str(error)


def test_cancel_stops_the_transfer(sim_shell, tmp_path):
    interrupter = Interrupter()
    dut = sim_shell(interrupter=interrupter)
    source = random_file(tmp_path / "source.bin", 1_000_000, seed=22)
    canceled_at: list[float] = []

    def progress(done: int, total: int) -> None:
        if not canceled_at:
            canceled_at.append(time.monotonic())
            # from another thread, as a SIGTERM handler or a watcher would
            threading.Thread(
                target=interrupter.cancel, args=(errors.JobCanceled("canceled"),)
            ).start()

    with pytest.raises(errors.JobCanceled):
        send_file(dut.shell, source, str(tmp_path / "dest.bin"), timeout=60, progress=progress)
    assert time.monotonic() - canceled_at[0] < 1.0


def test_char_delay_is_honoured(sim_shell, tmp_path):
    dut = sim_shell(char_delay=0.0002)
    source = random_file(tmp_path / "source.bin", 100, seed=23)
    send_file(dut.shell, source, str(tmp_path / "dest.bin"), timeout=60)
    assert (tmp_path / "dest.bin").read_bytes() == source.read_bytes()
    # a character at a time
    assert max(len(write) for write in dut.tap.writes) == 1


def test_bad_arguments(sim_shell, tmp_path):
    dut = sim_shell()
    source = random_file(tmp_path / "source.bin", 10)
    with pytest.raises(ValueError):
        send_file(dut.shell, source, str(tmp_path / "d"), timeout=10, chunk_size=0)
    with pytest.raises(ValueError):
        send_file(dut.shell, source, str(tmp_path) + "/", timeout=10)
    with pytest.raises(ValueError, match="shorter destination path"):
        send_file(dut.shell, source, "/tmp/" + "x" * 800, timeout=10)
    with pytest.raises(FileNotFoundError):
        send_file(dut.shell, tmp_path / "missing", str(tmp_path / "d"), timeout=10)


# -- the local checksums --------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65536, 100_003])
def test_cksum_matches_posix_cksum(tmp_path, size):
    if shutil.which("cksum") is None:
        pytest.skip("no cksum on this host")
    data = random_file(tmp_path / "data", size, seed=size).read_bytes()
    printed = subprocess.run(["cksum"], input=data, capture_output=True, check=True).stdout
    assert printed.split()[:2] == [cksum(data).encode(), str(size).encode()]
