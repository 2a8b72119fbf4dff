"""The job log: LAVA's exact line format, masking, markers, concurrency."""

from __future__ import annotations

import threading

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lava_dispatcher.log import MASK, TOO_LONG, JobLogger, dump_record, read_records

try:
    from yaml import CSafeDumper as CDumper
except ImportError:  # pragma: no cover
    CDumper = None  # type: ignore[assignment,misc]


def pyyaml_line(record: dict, dumper: type) -> str:
    return yaml.dump(
        record, Dumper=dumper, default_flow_style=True, default_style='"', width=10**5, sort_keys=False
    ).rstrip("\n")


@settings(max_examples=400)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_string_records_are_byte_identical_to_pyyaml(text: str) -> None:
    record = {"dt": "2026-05-01T10:00:00.123456+00:00", "lvl": "target", "msg": text}
    line = dump_record(record)
    assert line == pyyaml_line(record, yaml.SafeDumper)
    if CDumper is not None:
        assert line == pyyaml_line(record, CDumper)
    assert yaml.safe_load(line) == record


def test_result_records_load_back() -> None:
    record = {"dt": "x", "lvl": "results", "msg": {"case": "a", "starttc": 3, "measurement": 1.5}}
    assert yaml.safe_load(dump_record(record)) == record


def test_a_too_long_line_is_replaced_as_lava_does() -> None:
    line = dump_record({"dt": "x", "lvl": "target", "msg": "a" * 200_000})
    assert yaml.safe_load(line)["msg"] == TOO_LONG


def test_log_file_is_a_yaml_list_with_secrets_masked(tmp_path) -> None:
    path = tmp_path / "logs.yaml"
    logger = JobLogger()
    logger.add_file(path)
    logger.add_secret("s3cr3t")
    logger.info("start: 1 minimal-boot (timeout 00:00:30) [common]")
    logger.target("token is s3cr3t here", when=1_700_000_000.25)
    logger.feedback("other console", ns="host")
    logger.close()
    records = yaml.safe_load(path.read_text())
    assert [r["lvl"] for r in records] == ["info", "target", "feedback"]
    assert records[1]["msg"] == f"token is {MASK} here"
    assert records[1]["dt"] == "2023-11-14T22:13:20.250000+00:00"
    assert records[2]["ns"] == "host"
    assert "s3cr3t" not in path.read_text()


def test_markers_set_starttc_and_endtc_on_the_next_result(tmp_path) -> None:
    logger = JobLogger()
    logger.add_file(tmp_path / "logs.yaml")
    logger.target("line 1")
    logger.marker("case-a", "start_test_case")
    logger.target("line 2")
    logger.target("line 3")
    logger.marker("case-a", "end_test_case")
    record = logger.results({"definition": "0_smoke", "case": "case-a", "result": "pass"})
    assert (record["starttc"], record["endtc"]) == (0, 2)  # 0-based indexes of the marked lines
    other = logger.results({"definition": "0_smoke", "case": "case-b", "result": "pass"})
    assert "starttc" not in other


def test_concurrent_writers_never_interleave_lines(tmp_path) -> None:
    path = tmp_path / "logs.yaml"
    logger = JobLogger()
    logger.add_file(path)

    def write(tag: str) -> None:
        for i in range(2000):
            logger.target(f"{tag} {i:05d} " + "x" * 50)

    threads = [threading.Thread(target=write, args=(t,)) for t in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logger.close()
    records = read_records(path.read_text().splitlines())
    assert len(records) == 8000
    for tag in "abcd":
        numbers = [int(r["msg"].split()[1]) for r in records if r["msg"].startswith(tag)]
        assert numbers == list(range(2000))


@settings(max_examples=300)
@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_timestamps_match_datetime_isoformat(when: float) -> None:
    import datetime

    from lava_dispatcher.log import timestamp

    expected = datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat()
    assert timestamp(when) == expected


def test_console_lines_are_batched_but_reach_the_file_on_flush(tmp_path) -> None:
    path = tmp_path / "logs.yaml"
    logger = JobLogger()
    logger.add_file(path)
    logger.target("console line")
    logger.flush()
    assert "console line" in path.read_text()
    logger.target("another")
    logger.info("an action record flushes what came before it")
    assert "another" in path.read_text()
    logger.close()


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_logged_lines_equal_the_reference_format(text: str) -> None:
    import io

    stream = io.StringIO()
    logger = JobLogger()
    logger.add_stream(stream)
    logger.target(text, when=1_700_000_000.5)
    expected = pyyaml_line(
        {"dt": "2023-11-14T22:13:20.500000+00:00", "lvl": "target", "msg": text}, yaml.SafeDumper
    )
    assert stream.getvalue() == expected + "\n"


_scalars = (
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
    | st.integers()
    | st.floats(allow_nan=True)
    | st.booleans()
    | st.none()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3),
    max_leaves=8,
)


@pytest.mark.skipif(CDumper is None, reason="PyYAML was built without libyaml")
@settings(max_examples=400)
@given(st.dictionaries(st.text(min_size=1, max_size=8), _values, max_size=6))
def test_result_records_are_byte_identical_to_libyaml(msg: dict) -> None:
    record = {"dt": "2026-05-01T10:00:00+00:00", "lvl": "results", "msg": msg}
    assert dump_record(record) == pyyaml_line(record, CDumper)
