"""The simulated U-Boot's commands: `COMMANDS`, for `uboot_shell.Interpreter`.

Each takes the interpreter and argv (argv[0]: the name as typed) and returns
a status (0 success, 1 failure, USAGE for its usage text) or, to wait
(`sleep`) or run command lines (`run`, `boot`), a generator of the delays
that returns the status. Help texts are U-Boot's.
"""

from __future__ import annotations

from collections.abc import Callable

from lava_dispatcher.sim.uboot_env import (
    DHCP_LEASE,
    ETHERNET,
    TOOLCHAIN,
    VERSION_STRING,
    default_env,
    parse_hex,
)
from lava_dispatcher.sim.uboot_shell import (
    FAILURE,
    MAX_RUN_DEPTH,
    SUCCESS,
    USAGE,
    Command,
    Interpreter,
    Run,
    find_command,
    is_ip,
    usage_text,
)


def do_help(it: Interpreter, argv: list[str]) -> int:
    if len(argv) == 1:
        for name in sorted(COMMANDS):
            it.write(f"{name:<10}- {COMMANDS[name].summary}\n")
        return SUCCESS
    status = SUCCESS
    for name in argv[1:]:
        command = find_command(COMMANDS, name)
        if command is None:
            it.write(
                f"Unknown command '{name}' - try 'help' without arguments "
                "for list of all known commands\n\n"
            )
            status = FAILURE
        else:
            it.write(usage_text(command))
    return status


def do_version(it: Interpreter, argv: list[str]) -> int:
    it.write(f"{VERSION_STRING}\n\n" + "".join(line + "\n" for line in TOOLCHAIN))
    return SUCCESS


def do_echo(it: Interpreter, argv: list[str]) -> int:
    words = argv[1:]
    newline = "\n"
    if words and words[0] == "-n":
        words, newline = words[1:], ""
    it.write(" ".join(words) + newline)
    return SUCCESS


def do_setenv(it: Interpreter, argv: list[str]) -> int:
    args = [a for a in argv[1:] if a != "-f"]
    if not args:
        return USAGE
    return it.set_env(args[0], " ".join(args[1:]) if len(args) > 1 else None)


def do_printenv(it: Interpreter, argv: list[str]) -> int:
    return it.print_env([a for a in argv[1:] if a != "-a"])


def do_saveenv(it: Interpreter, argv: list[str]) -> int:
    it.write("Saving Environment to MMC... Writing to MMC(0)... OK\n")
    it.host.save_env(dict(it.env))
    return SUCCESS


def do_env(it: Interpreter, argv: list[str]) -> int:
    if len(argv) < 2:
        return USAGE
    sub, args = argv[1], argv[2:]
    if sub == "default":
        defaults = default_env(it.config)
        names = [a for a in args if not a.startswith("-")]
        if "-a" in args:
            it.write("## Resetting to default environment\n")
            it.env.clear()
            it.env.update(defaults)
        elif not names:
            return USAGE
        for name in names:
            it.set_env(name, defaults.get(name))
        return SUCCESS
    if sub in ("print", "printenv"):
        return do_printenv(it, argv[1:])
    if sub in ("set", "setenv"):
        return do_setenv(it, argv[1:])
    if sub in ("save", "saveenv"):
        return do_saveenv(it, argv[1:])
    if sub == "delete":
        names = [a for a in args if a != "-f"]
        if not names:
            return USAGE
        for name in names:
            it.set_env(name, None)
        return SUCCESS
    if sub == "exists":
        return SUCCESS if args and args[0] in it.env else FAILURE
    return USAGE


def do_run(it: Interpreter, argv: list[str]) -> Run:
    if len(argv) < 2:
        return USAGE
    for name in argv[1:]:
        script = it.env.get(name)
        if script is None:
            it.write(f'## Error: "{name}" not defined\n')
            return FAILURE
        if it.depth >= MAX_RUN_DEPTH:
            it.write(f"## Error: 'run {name}' nested too deep\n")
            return FAILURE
        it.depth += 1
        try:
            status = yield from it.execute(script)
        finally:
            it.depth -= 1
        if status != SUCCESS or it.halted:
            return status
    return SUCCESS


def do_true(it: Interpreter, argv: list[str]) -> int:
    return SUCCESS


def do_false(it: Interpreter, argv: list[str]) -> int:
    return FAILURE


def do_sleep(it: Interpreter, argv: list[str]) -> Run:
    try:
        seconds = float(argv[1]) if len(argv) == 2 else -1.0
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        return USAGE
    yield seconds
    return SUCCESS


def do_dhcp(it: Interpreter, argv: list[str]) -> int:
    it.write(f"BOOTP broadcast 1\nDHCP client bound to address {DHCP_LEASE['ipaddr']} (2 ms)\n")
    it.env.update(DHCP_LEASE)
    it.env["ethact"] = ETHERNET
    if it.env.get("autoload", "y")[:1] in ("n", "N", "0", "f", "F"):
        return SUCCESS
    return do_tftpboot(it, argv)


def do_tftpboot(it: Interpreter, argv: list[str]) -> int:
    args = argv[1:]
    if len(args) > 2:
        return USAGE
    addr = it.load_addr
    if args and (len(args) == 2 or parse_hex(args[0]) is not None):
        given = parse_hex(args.pop(0))
        if given is None:
            return USAGE
        addr = given
    filename = args[0] if args else it.env.get("bootfile", "")
    if not filename:
        ip = it.env.get("ipaddr", "0.0.0.0")
        filename = "".join(f"{int(p):02X}" for p in ip.split(".")) + ".img" if is_ip(ip) else ""
        it.write(f"*** Warning: no boot file name; using '{filename}'\n")
    return it.tftp(addr, filename)


def do_ping(it: Interpreter, argv: list[str]) -> int:
    if len(argv) != 2:
        return USAGE
    if not it.env.get("ipaddr"):
        it.write("*** ERROR: `ipaddr' not set\n")
        return FAILURE
    it.write(f"Using {ETHERNET} device\n")
    alive = {it.env.get(n) for n in ("serverip", "gatewayip", "dnsip")} | {DHCP_LEASE["serverip"]}
    if argv[1] in alive:
        it.write(f"host {argv[1]} is alive\n")
        return SUCCESS
    it.write(f"\nping failed; host {argv[1]} is not alive\n")
    return FAILURE


def boot_command(kind: str) -> Callable[[Interpreter, list[str]], int]:
    def run(it: Interpreter, argv: list[str]) -> int:
        return it.boot_linux(kind, argv[1:])

    return run


def do_boot(it: Interpreter, argv: list[str]) -> Run:
    script = it.env.get("bootcmd")
    if not script:
        return FAILURE
    return (yield from it.execute(script))


def do_sysboot(it: Interpreter, argv: list[str]) -> int:
    """The board's own boot (the default bootcmd): extlinux.conf on its MMC."""
    it.write("Retrieving file: /extlinux/extlinux.conf\n1:\tLAVA simulated board\n")
    it.write("Retrieving file: /Image\n")
    if it.host.board_ramdisk():
        it.write("Retrieving file: /initrd.img\n")
    bootargs = it.env.get("bootargs")
    if bootargs:
        it.write(f"append: {bootargs}\n")
    it.write("Retrieving file: /sim.dtb\n")
    it.hand_over(None, (0x43000000, 0x2000), None)
    return SUCCESS


def do_reset(it: Interpreter, argv: list[str]) -> int:
    it.write("resetting ...\n")
    it.halted = True
    it.host.reset()
    return SUCCESS


def _commands(*table: Command) -> dict[str, Command]:
    return {command.name: command for command in table}


COMMANDS = _commands(
    Command("?", "alias for 'help'", "[command ...]\n    - show help for the commands", do_help),
    Command("boot", "boot default, i.e., run 'bootcmd'", "\n    - run 'bootcmd'", do_boot),
    Command("bootd", "boot default, i.e., run 'bootcmd'", "\n    - run 'bootcmd'", do_boot),
    Command(
        "booti",
        "boot Linux kernel 'Image' format from memory",
        "[addr [initrd[:size]] [fdt]]\n    - boot Linux 'Image' stored at 'addr'",
        boot_command("booti"),
    ),
    Command(
        "bootm",
        "boot application image from memory",
        "[addr [initrd[:size]] [fdt]]\n    - boot application image stored in memory",
        boot_command("bootm"),
    ),
    Command(
        "bootz",
        "boot Linux zImage image from memory",
        "[addr [initrd[:size]] [fdt]]\n    - boot Linux zImage stored in memory",
        boot_command("bootz"),
    ),
    Command(
        "dhcp",
        "boot image via network using DHCP/TFTP protocol",
        "[loadAddress] [[hostIPaddr:]bootfilename]",
        do_dhcp,
    ),
    Command(
        "echo",
        "echo args to console",
        "[-n] [args..]\n    - echo args to console; -n suppresses newline",
        do_echo,
    ),
    Command(
        "env",
        "environment handling commands",
        "default [-f] -a - [forcibly] reset default environment\n"
        "env delete [-f] var [...] - [forcibly] delete variable(s)\n"
        "env exists name - tests for existence of variable\n"
        "env print [-a | name ...] - print environment\n"
        "env save - save environment\n"
        "env set [-f] name [arg ...]",
        do_env,
    ),
    Command("false", "do nothing, unsuccessfully", "\n    - do nothing, unsuccessfully", do_false),
    Command(
        "help",
        "print command description/usage",
        "[command ...]\n    - show help for the commands",
        do_help,
    ),
    Command("ping", "send ICMP ECHO_REQUEST to network host", "pingAddress", do_ping),
    Command(
        "printenv",
        "print environment variables",
        "[-a]\n    - print [all] values of all environment variables\n"
        "printenv name ...\n    - print value of environment variable 'name'",
        do_printenv,
    ),
    Command("reset", "Perform RESET of the CPU", "\n    - reset the board", do_reset),
    Command(
        "run",
        "run commands in an environment variable",
        "var [...]\n    - run the commands in the environment variable(s) 'var'",
        do_run,
    ),
    Command("saveenv", "save environment variables to persistent storage", "", do_saveenv),
    Command(
        "setenv",
        "set environment variables",
        "[-f] name value ...\n    - [forcibly] set environment variable 'name' to 'value ...'\n"
        "setenv [-f] name\n    - [forcibly] delete environment variable 'name'",
        do_setenv,
    ),
    Command(
        "sleep",
        "delay execution for some time",
        "N\n    - delay execution for N seconds (N is _decimal_ and can be fractional)",
        do_sleep,
    ),
    Command(
        "sysboot",
        "command to get and boot from syslinux files",
        "[-p] <interface> <dev[:part]> <ext2|fat|any> [addr] [filename]\n"
        "    - load and parse syslinux menu file 'filename' from ext2, fat\n"
        "      or any filesystem on 'dev' on 'interface' to address 'addr'",
        do_sysboot,
    ),
    Command(
        "tftpboot",
        "load file via network using TFTP protocol",
        "[loadAddress] [[hostIPaddr:]bootfilename]",
        do_tftpboot,
    ),
    Command("true", "do nothing, successfully", "\n    - do nothing, successfully", do_true),
    Command("version", "print monitor, compiler and linker version", "", do_version),
)
