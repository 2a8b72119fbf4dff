"""A line reaches the streams (stdout, the worker's doorbell) only once it is in the log file,
whatever the stream's own buffering: a reader woken by the stream finds it on disk."""

from __future__ import annotations

from pathlib import Path

from lava_dispatcher.log import JobLogger


class Doorbell:
    """An unbuffered stream that, at each write, reads what the file holds then."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[tuple[str, str]] = []

    def write(self, text: str) -> int:
        self.seen.append((text, self.path.read_text(encoding="utf-8")))
        return len(text)

    def flush(self) -> None:
        pass


def check(bell: Doorbell) -> None:
    assert bell.seen
    for text, on_disk in bell.seen:
        for line in text.splitlines():
            assert f"- {line}" in on_disk.splitlines(), line


def test_batched_lines_reach_the_stream_after_the_file(tmp_path: Path) -> None:
    log = tmp_path / "logs.yaml"
    logger = JobLogger()
    logger.add_file(log)
    bell = Doorbell(log)
    logger.add_stream(bell)  # type: ignore[arg-type]
    logger.target("a console line")
    logger.log("results", {"definition": "0_x", "case": "started", "result": "pass"})
    assert bell.seen == []  # console lines and results come in batches
    logger.flush()  # the console went quiet
    check(bell)
    logger.info("an action started")  # not batched: at once, file first
    check(bell)
    assert "an action started" in bell.seen[-1][0]
    logger.close()


def test_a_flood_reaches_the_stream_in_bounded_steps(tmp_path: Path) -> None:
    log = tmp_path / "logs.yaml"
    logger = JobLogger()
    logger.add_file(log)
    bell = Doorbell(log)
    logger.add_stream(bell)  # type: ignore[arg-type]
    for index in range(5000):
        logger.target(f"line {index} " + "x" * 40)
    assert bell.seen  # never quiet, yet the stream is not held back forever
    check(bell)
    logger.close()
    assert sum(text.count("\n") for text, _ in bell.seen) == 5000


def test_without_a_file_streams_get_every_line_at_once() -> None:
    import io

    stream = io.StringIO()
    logger = JobLogger()
    logger.add_stream(stream)
    logger.target("at once")
    assert "at once" in stream.getvalue()
