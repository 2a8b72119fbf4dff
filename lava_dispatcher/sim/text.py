"""What the simulated board prints: kernel boot log, getty banner, panics.

The messages imitate the shapes of real Linux console output (timestamps,
the "Linux version" banner, the panic block with its end marker) because
that is what dispatchers match on. Lines are returned without line endings;
the board adds CR LF as a serial console does.
"""

from __future__ import annotations

KERNEL_RELEASE = "6.1.0-sim"
KERNEL_VERSION_LINE = (
    f"Linux version {KERNEL_RELEASE} (sim@lava-dispatcher) "
    "(gcc (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) "
    f"#1 SMP PREEMPT_DYNAMIC Debian {KERNEL_RELEASE}"
)

_KERNEL_BODY = [
    "Booting Linux on physical CPU 0x0000000000 [0x410fd083]",
    "Machine model: LAVA simulated board",
    "Memory: 1016584K/1048576K available (14336K kernel code, 2048K rwdata, "
    "4096K rodata, 2048K init, 512K bss, 31992K reserved)",
    "SLUB: HWalign=64, Order=0-3, MinObjects=0, CPUs=2, Nodes=1",
    "rcu: Preemptible hierarchical RCU implementation.",
    "NR_IRQS: 64, nr_irqs: 64, preallocated irqs: 0",
    "clocksource: arch_sys_counter: mask: 0xffffffffffffff max_cycles: 0x1cd42e4dffb, "
    "max_idle_ns: 881590591483 ns",
    "Console: colour dummy device 80x25",
    "Calibrating delay loop (skipped), value calculated using timer frequency.. "
    "125.00 BogoMIPS (lpj=250000)",
    "pid_max: default: 32768 minimum: 301",
    "smp: Brought up 1 node, 2 CPUs",
    "devtmpfs: initialized",
    "NET: Registered PF_NETLINK/PF_ROUTE protocol family",
    "Serial: 8250/16550 driver, 4 ports, IRQ sharing enabled",
    "printk: console [ttyS0] enabled",
    "mmc0: new high speed SDHC card at address 0001",
    "mmcblk0: mmc0:0001 SIM16G 14.8 GiB",
    " mmcblk0: p1 p2",
    "EXT4-fs (mmcblk0p2): mounted filesystem with ordered data mode. Quota mode: none.",
    "VFS: Mounted root (ext4 filesystem) on device 179:2.",
    "Freeing unused kernel memory: 2048K",
]
_KERNEL_LAST = "Run /sbin/init as init process"


def timestamp(seconds: float) -> str:
    """The kernel's '[    1.234567]' prefix."""
    micros = max(0, round(seconds * 1_000_000))
    return f"[{micros // 1_000_000:5d}.{micros % 1_000_000:06d}]"


def kernel_lines(count: int, baud: int | None = None, *, initramfs: bool = False) -> list[str]:
    """`count` kernel messages (no timestamps): the version banner first and
    the hand-over to init last. With `initramfs`, the root is a ramdisk: no
    root= on the command line, no disk mounted."""
    root = "rdinit=/init" if initramfs else "root=/dev/mmcblk0p2 rootwait"
    command_line = f"Kernel command line: console=ttyS0,{baud or 115200}n8 {root}"
    body = [_KERNEL_BODY[0], command_line, *_KERNEL_BODY[1:]]
    if initramfs:
        body = [line for line in body if not line.startswith(("EXT4-fs", "VFS: Mounted root"))]
    if count == 1:
        return [KERNEL_VERSION_LINE]
    middle = count - 2
    lines = body[:middle]
    for n in range(len(lines), middle):
        lines.append(f"sim-bus: simulated device sim{n - len(body)} registered")
    last = "Run /init as init process" if initramfs else _KERNEL_LAST
    return [KERNEL_VERSION_LINE, *lines, last]


def getty_banner(hostname: str) -> str:
    return f"Debian GNU/Linux 12 {hostname} ttyS0"


def motd(hostname: str) -> list[str]:
    return [
        f"Linux {hostname} {KERNEL_RELEASE} #1 SMP PREEMPT_DYNAMIC Debian {KERNEL_RELEASE} aarch64",
        "",
    ]


def panic_lines(
    reason: str, *, preamble: list[str] | None = None, pid: int = 1, comm: str = "init"
) -> list[str]:
    """A kernel panic block, from the cause to the end marker."""
    return [
        *(preamble or []),
        f"Kernel panic - not syncing: {reason}",
        f"CPU: 0 PID: {pid} Comm: {comm} Not tainted {KERNEL_RELEASE} #1",
        "Hardware name: LAVA simulated board (DT)",
        "Call trace:",
        " dump_backtrace+0xe4/0x140",
        " show_stack+0x20/0x30",
        " dump_stack_lvl+0x64/0x80",
        " panic+0x18c/0x37c",
        " do_exit+0x8b0/0x9c0",
        " el0t_64_sync+0x190/0x194",
        "SMP: stopping secondary CPUs",
        "Kernel Offset: disabled",
        "Memory Limit: none",
        f"---[ end Kernel panic - not syncing: {reason} ]---",
    ]


def burst_line(number: int, width: int) -> bytes:
    """One numbered line of a burst, 80 bytes with its CR LF."""
    head = f"burst line {number:0{width}d} "
    return (head + "." * max(0, 78 - len(head))).encode() + b"\r\n"
