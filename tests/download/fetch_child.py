"""Run by test_cache.py in child processes: one fetch through a shared cache.

Usage: fetch_child.py URL DEST CACHE_DIR SHA256SUM|-

Prints every log line (``<level> <message>``) as it happens, then
``RESULT <cache state>``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lava_dispatcher.download import fetch
from lava_dispatcher.download_cache import DownloadCache


class Printer:
    def debug(self, msg: Any) -> None:
        print("debug", msg, flush=True)

    def info(self, msg: Any) -> None:
        print("info", msg, flush=True)

    def warning(self, msg: Any) -> None:
        print("warning", msg, flush=True)


def main() -> None:
    url, dest, root, checksum = sys.argv[1:5]
    result = fetch(
        url,
        Path(dest),
        timeout=60,
        cache=DownloadCache(root),
        checksums={"sha256sum": checksum} if checksum != "-" else None,
        logger=Printer(),
        label="image",
    )
    print("RESULT", result.cache, flush=True)


if __name__ == "__main__":
    main()
