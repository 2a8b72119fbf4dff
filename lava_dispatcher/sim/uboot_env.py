"""The simulated U-Boot's environment and command-line syntax.

The syntax is the subset of U-Boot's hush shell that boot commands use:

* commands separated by `;` or a newline run one after the other whatever
  their status; `a && b` runs b only if a succeeded, `a || b` only if it
  failed;
* words are separated by blanks; 'single quotes' keep everything literal,
  "double quotes" keep blanks but expand variables, a backslash quotes the
  next character; `#` at the start of a word comments out the rest;
* `$name` and `${name}` expand to a local (hush) variable or else an
  environment variable (nothing if neither is set), `$?` to the status of
  the last command; an unquoted expansion is split into words on blanks;
* `name=value` alone sets a local variable (not the environment).

Expansion happens when a command runs, not when the line is read, so
`tftp ...; setenv size ${filesize}` sees the size tftp has just set.
`if`, `for`, `while` and `test` are not supported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from lava_dispatcher.sim.config import SimConfig

VERSION = "2023.01"
VERSION_STRING = f"U-Boot {VERSION} (sim) (Jan 10 2023 - 00:00:00 +0000)"
TOOLCHAIN = (
    "aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0",
    "GNU ld (GNU Binutils for Debian) 2.40",
)
# the board's devices, as the banner and the network commands name them
SERIAL = "serial@9000000"
MMC = "mmc@9050000"
ETHERNET = "ethernet@9010000"
# what `dhcp` gets from the lab's DHCP server (QEMU's user network values)
DHCP_LEASE = {
    "ipaddr": "10.0.2.15",
    "netmask": "255.255.255.0",
    "gatewayip": "10.0.2.2",
    "dnsip": "10.0.2.3",
    "serverip": "10.0.2.2",
}
# 2 GiB of DRAM from 0x40000000; U-Boot relocates itself to the top of it
RAM_START = 0x4000_0000
RAM_SIZE = 0x8000_0000
RAM_END = RAM_START + RAM_SIZE
RESERVED_START = RAM_END - 0x0200_0000
ENV_SIZE = 262140
# command line buffer (CONFIG_SYS_CBSIZE)
CBSIZE = 1024

NAME = re.compile(r"[A-Za-z0-9_]+")
ASSIGNMENT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z", re.DOTALL)
BLANKS = " \t"


def default_env(config: SimConfig) -> dict[str, str]:
    """The environment the board starts with (or gets back with `env default -a`)."""
    return {
        "arch": "arm",
        "baudrate": str(config.baud or 115200),
        "board": "sim",
        "board_name": "sim",
        "bootcmd": "run distro_bootcmd",
        "bootdelay": str(config.autoboot_delay),
        "cpu": "armv8",
        "distro_bootcmd": "sysboot mmc 0:1 any ${scriptaddr} /extlinux/extlinux.conf",
        "ethaddr": "52:54:00:12:34:56",
        "fdt_addr_r": "0x43000000",
        "fdt_high": "0xffffffff",
        "initrd_high": "0xffffffff",
        "kernel_addr_r": "0x40400000",
        "loadaddr": "0x40200000",
        "pxefile_addr_r": "0x40300000",
        "ramdisk_addr_r": "0x44000000",
        "scriptaddr": "0x40200000",
        "stderr": SERIAL,
        "stdin": SERIAL,
        "stdout": SERIAL,
        "vendor": "lava",
    }


def env_size(env: dict[str, str]) -> int:
    """Bytes the environment takes once saved (name=value NUL ... NUL)."""
    return sum(len(k) + len(v) + 2 for k, v in env.items()) + 1


def parse_hex(text: str) -> int | None:
    """A number as U-Boot's commands read addresses and sizes: hexadecimal,
    with or without 0x; None if `text` is not one."""
    digits = text[2:] if text[:2].lower() == "0x" else text
    if not digits or any(c not in "0123456789abcdefABCDEF" for c in digits):
        return None
    return int(digits, 16)


def format_size(size: int, suffix: str = "") -> str:
    """A byte count the way U-Boot prints one: '1000 Bytes', '2 MiB', '9.3 MiB/s'
    (the largest binary unit, one decimal rounded, none when it is 0)."""
    for power, unit in ((6, "E"), (5, "P"), (4, "T"), (3, "G"), (2, "M"), (1, "K")):
        scale = 1 << (10 * power)
        if size >= scale:
            whole, rest = divmod(size, scale)
            tenths = (10 * rest + scale // 2) // scale
            if tenths >= 10:
                whole, tenths = whole + 1, tenths - 10
            decimals = f".{tenths}" if tenths else ""
            return f"{whole}{decimals} {unit}iB{suffix}"
    return f"{size} Bytes{suffix}"


# -- command lines -------------------------------------------------------------


@dataclass
class Split:
    """A command line cut into commands: (connector, text) pairs, the
    connector being ';', '&&' or '||' (how the command hangs on the one
    before); `incomplete` when a quote is still open at the end."""

    commands: list[tuple[str, str]]
    incomplete: bool = False


def split_commands(line: str) -> Split:
    """Cut a command line at the unquoted `;`, newlines, `&&` and `||`."""
    commands: list[tuple[str, str]] = []
    connector = ";"
    current: list[str] = []
    quote = ""
    i = 0
    word_start = True
    while i < len(line):
        c = line[i]
        if quote:
            current.append(c)
            if c == "\\" and quote == '"' and i + 1 < len(line):
                current.append(line[i + 1])
                i += 1
            elif c == quote:
                quote = ""
            i += 1
            continue
        if c == "\\":
            if i + 1 >= len(line):
                return Split(commands, incomplete=True)
            current.append(line[i : i + 2])
            i += 2
            word_start = False
            continue
        if c in "'\"":
            quote = c
            current.append(c)
        elif c == "#" and word_start:
            end = line.find("\n", i)
            i = len(line) if end < 0 else end
            continue
        elif c in ";\n" or line.startswith(("&&", "||"), i):
            commands.append((connector, "".join(current)))
            current = []
            connector = ";" if c in ";\n" else line[i : i + 2]
            i += 1 if c in ";\n" else 2
            word_start = True
            continue
        else:
            current.append(c)
        word_start = c in BLANKS
        i += 1
    if quote:
        return Split(commands, incomplete=True)
    commands.append((connector, "".join(current)))
    return Split([(conn, text) for conn, text in commands if text.strip(BLANKS)])


def expand_words(text: str, lookup: Callable[[str], str | None]) -> list[str]:
    """The words of one command, variables expanded (see the module docstring)."""
    words: list[str] = []
    word: list[str] = []
    has_word = False  # the current word exists even if empty ("" or '')
    quote = ""
    i = 0

    def finish() -> None:
        nonlocal word, has_word
        if has_word:
            words.append("".join(word))
        word, has_word = [], False

    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                word.append(c)
            i += 1
            continue
        if c == "\\" and i + 1 < len(text):
            following = text[i + 1]
            if quote and following not in '\\$"`':
                word.append(c)
            elif following != "\n":
                word.append(following)
            has_word = True
            i += 2
            continue
        if c == "$":
            name, end = _variable(text, i)
            if name is None:
                word.append(c)
                has_word = True
                i += 1
                continue
            value = lookup(name) or ""
            i = end
            if quote:
                word.append(value)
                has_word = True
                continue
            # unquoted: split into words on blanks
            parts = re.split(r"[ \t\n]+", value)
            for n, part in enumerate(parts):
                if n:
                    finish()
                if part:
                    word.append(part)
                    has_word = True
            continue
        if quote == '"':
            if c == '"':
                quote = ""
            else:
                word.append(c)
            i += 1
            continue
        if c in "'\"":
            quote = c
            has_word = True
        elif c in BLANKS or c == "\n":
            finish()
        else:
            word.append(c)
            has_word = True
        i += 1
    finish()
    return words


def _variable(text: str, i: int) -> tuple[str | None, int]:
    """The variable named at text[i] (a '$'): (name, index after it)."""
    if text.startswith("${", i):
        end = text.find("}", i + 2)
        if end < 0:
            return None, i + 1
        return text[i + 2 : end], end + 1
    if text.startswith("$?", i):
        return "?", i + 2
    match = NAME.match(text, i + 1)
    if match is None:
        return None, i + 1
    return match.group(), match.end()


def assignment(text: str) -> tuple[str, str] | None:
    """(name, unexpanded value) when the command is a hush `name=value`."""
    match = ASSIGNMENT.match(text)
    if match is None:
        return None
    value = match.group(2).strip(BLANKS)
    if len(expand_words(value, lambda name: None)) > 1:
        return None  # name=value command ...: not supported, not an assignment
    return match.group(1), value
