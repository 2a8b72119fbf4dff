"""FileServer: real HTTP requests on loopback (urllib, http.client, raw sockets,
busybox wget)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from lava_dispatcher.fileserver import FileServer, parse_range

from .conftest import random_file

NAME = "overlay-1.2.3.tar.gz"


@pytest.fixture
def overlay(tmp_path: Path) -> Path:
    return random_file(tmp_path / "overlay.tar.gz", 123_457, seed=1)


class Lines:
    """on_request's lines; the line of a request is written once its response
    is out, so a test waits for it (on a condition, never a sleep)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.cond = threading.Condition()

    def __call__(self, line: str) -> None:
        with self.cond:
            self.items.append(line)
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> list[str]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= count, timeout), self.items
            return list(self.items)


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def status_of(url: str, method: str = "GET", data: bytes | None = None) -> urllib.error.HTTPError:
    request = urllib.request.Request(url, method=method, data=data)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    info.value.close()
    return info.value


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@contextlib.contextmanager
def raw_client(port: int) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


# -- serving -------------------------------------------------------------------------------


def test_get_serves_exactly_the_published_file(file_server, overlay):
    lines = Lines()
    server = file_server(on_request=lines)
    url = server.publish(overlay, NAME)
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname == "127.0.0.1" and parts.port == server.port
    token, name = parts.path.split("/")[1:]
    assert name == NAME and len(token) >= 32

    status, headers, body = get(url)
    assert status == 200
    assert body == overlay.read_bytes()
    assert headers["Content-Length"] == str(len(body))
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Accept-Ranges"] == "bytes"
    assert lines.wait(1) == [f"GET /{NAME} 200 {len(body)} bytes from 127.0.0.1"]
    assert token not in lines.items[0]


def test_default_name_and_quoting(file_server, tmp_path):
    server = file_server()
    plain = random_file(tmp_path / "kernel.img", 100)
    assert server.publish(plain).endswith("/kernel.img")
    url = server.publish(plain, "a file#1?.bin")
    assert url.endswith("/a%20file%231%3F.bin")
    assert get(url)[2] == plain.read_bytes()


def test_head(file_server, overlay):
    lines = Lines()
    server = file_server(on_request=lines)
    url = server.publish(overlay)
    status, headers, body = get(url, method="HEAD")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(overlay.stat().st_size)
    assert lines.wait(1) == [f"HEAD /{overlay.name} 200 0 bytes from 127.0.0.1"]


def test_ranges(file_server, overlay):
    lines = Lines()
    server = file_server(on_request=lines)
    url = server.publish(overlay)
    data = overlay.read_bytes()
    size = len(data)

    status, headers, body = get(url, {"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Range"]) == (206, data[10:20], f"bytes 10-19/{size}")
    assert headers["Content-Length"] == "10"
    assert (
        lines.wait(1)[0]
        == f"GET /{overlay.name} 206 10 bytes (range 10-19 of {size}) from 127.0.0.1"
    )
    assert get(url, {"Range": "bytes=100000-"})[2] == data[100000:]
    assert get(url, {"Range": "bytes=-50"})[2] == data[-50:]
    assert get(url, {"Range": f"bytes=5-{size * 2}"})[2] == data[5:]
    # the file's validator: a resumed download of the same file gets its part
    etag = get(url, method="HEAD")[1]["ETag"]
    assert get(url, {"Range": "bytes=1-2", "If-Range": etag})[0] == 206
    # ignored Range headers: the whole file
    assert get(url, {"Range": "bytes=1-2", "If-Range": '"other"'})[:1] == (200,)
    assert get(url, {"Range": "bytes=0-1,5-6"})[2] == data
    assert get(url, {"Range": "lines=1-2"})[2] == data
    # a HEAD with a range
    status, headers, body = get(url, {"Range": "bytes=0-99"}, method="HEAD")
    assert (status, headers["Content-Length"], body) == (206, "100", b"")

    request = urllib.request.Request(url, headers={"Range": f"bytes={size}-"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 416
    assert info.value.headers["Content-Range"] == f"bytes */{size}"
    info.value.close()


@pytest.mark.parametrize(
    "header,size,expected",
    [
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=0-", 10, (0, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=3-100", 10, (3, 9)),
        ("Bytes = 2 - 4", 10, (2, 4)),
        ("bytes=10-", 10, False),
        ("bytes=-0", 10, False),
        ("bytes=0-", 0, False),
        ("bytes=5-2", 10, None),
        ("bytes=-", 10, None),
        ("bytes=1-2,4-5", 10, None),
        ("items=1-2", 10, None),
        ("bytes=a-b", 10, None),
    ],
)
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


def test_unknown_and_unpublished_urls_are_404(file_server, overlay, tmp_path):
    lines = Lines()
    server = file_server(on_request=lines)
    url = server.publish(overlay, NAME)
    base = f"http://127.0.0.1:{server.port}"
    token = urlsplit(url).path.split("/")[1]
    guesses = [
        f"{base}/",
        f"{base}/{NAME}",
        f"{base}/{token}",
        f"{base}/{token}/",
        f"{base}/{token}/other-name",
        f"{base}/{token}/{NAME}/more",
        f"{base}/{token[:-1]}/{NAME}",
        f"{base}/{token}/../{NAME}",
        f"{base}/../../etc/passwd",
        f"{base}/{token}/%2e%2e%2fetc%2fpasswd",
        f"{base}/{token}/%ff",
        f"{base}{tmp_path}/overlay.tar.gz",
    ]
    for guess in guesses:
        assert status_of(guess).code == 404, guess
    assert get(url + "?query=1")[0] == 200  # a query string is not part of the path

    assert server.unpublish(url) is True
    assert status_of(url).code == 404
    assert server.unpublish(url) is False
    second = server.publish(overlay)
    assert server.unpublish(urlsplit(second).path.split("/")[1]) is True  # by token
    assert server.published() == []
    assert all(token not in line for line in lines.wait(len(guesses) + 2))


def test_a_file_removed_after_publishing_is_404(file_server, tmp_path):
    server = file_server()
    path = random_file(tmp_path / "gone.bin", 10)
    url = server.publish(path)
    path.unlink()
    assert status_of(url).code == 404


def test_other_methods_are_405(file_server, overlay):
    lines = Lines()
    server = file_server(on_request=lines)
    url = server.publish(overlay)
    for method, data in [
        ("POST", b"x=1"),
        ("PUT", b"content"),
        ("DELETE", None),
        ("OPTIONS", None),
        ("PATCH", b"x"),
        ("TRACE", None),
        ("BREW", None),
    ]:
        error = status_of(url, method, data)
        assert error.code == 405, method
        assert error.headers["Allow"] == "GET, HEAD"
    assert f"POST /{overlay.name} 405 0 bytes from 127.0.0.1" in lines.wait(7)
    assert len(lines.items) == 7


def test_keep_alive_serves_several_requests_on_one_connection(file_server, overlay):
    server = file_server()
    url = urlsplit(server.publish(overlay))
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(3):
            connection.request("GET", url.path)
            response = connection.getresponse()
            assert response.status == 200
            assert response.read() == overlay.read_bytes()
        connection.request("GET", "/nothing/here")
        response = connection.getresponse()
        assert response.status == 404
        response.read()
        connection.request("HEAD", url.path)
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def test_bad_request_is_answered(file_server):
    lines = Lines()
    server = file_server(on_request=lines)
    with raw_client(server.port) as sock:
        sock.sendall(b"GET /a b HTTP/1.1\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400")
    assert " 400 " in lines.wait(1)[0]


def test_advertise_and_base_url(file_server, overlay):
    server = file_server(advertise="dispatcher.lab.example")
    url = server.publish(overlay)
    assert url.startswith(f"http://dispatcher.lab.example:{server.port}/")
    # it still listens on loopback
    assert get(url.replace("dispatcher.lab.example", "127.0.0.1"))[0] == 200


def test_ipv6_loopback(file_server, overlay):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = file_server(host="::1")
    url = server.publish(overlay)
    assert url.startswith(f"http://[::1]:{server.port}/")
    assert get(url)[2] == overlay.read_bytes()


def test_publish_checks_its_arguments(file_server, tmp_path, overlay):
    server = file_server()
    with pytest.raises(FileNotFoundError):
        server.publish(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        server.publish(tmp_path)  # a directory
    for bad in ("a/b", "", "..", "."):
        with pytest.raises(ValueError):
            server.publish(overlay, bad)


def test_lifetime(overlay):
    server = FileServer()
    with pytest.raises(RuntimeError):
        _ = server.port
    with server:
        url = server.publish(overlay)
        assert get(url)[0] == 200
        port = server.port
    server.stop()  # idempotent
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    with pytest.raises(RuntimeError):
        server.start()  # not restartable
    FileServer().stop()  # stopping a server never started is fine


# -- real clients, big files, many clients ------------------------------------------------------


@pytest.fixture
def busybox() -> str:
    path = shutil.which("busybox")
    if path is None:
        pytest.skip("busybox is not installed")
    return path


def test_busybox_wget(file_server, overlay, tmp_path, busybox):
    lines = Lines()
    server = file_server(on_request=lines)
    url = server.publish(overlay, NAME)
    out = tmp_path / "fetched"
    subprocess.run([busybox, "wget", "-q", "-O", str(out), url], check=True, timeout=30)
    assert out.read_bytes() == overlay.read_bytes()
    assert lines.wait(1)[0] == f"GET /{NAME} 200 {overlay.stat().st_size} bytes from 127.0.0.1"

    # resume a partial download (busybox wget -c sends a Range request)
    data = overlay.read_bytes()
    out.write_bytes(data[:50_000])
    subprocess.run([busybox, "wget", "-q", "-c", "-O", str(out), url], check=True, timeout=30)
    assert out.read_bytes() == data
    assert f" 206 {len(data) - 50_000} bytes (range 50000-" in lines.wait(2)[1]

    # an unknown URL: wget fails
    failed = subprocess.run(
        [busybox, "wget", "-q", "-O", str(tmp_path / "x"), url + "x"],
        capture_output=True,
        timeout=30,
    )
    assert failed.returncode != 0


def test_large_file_is_streamed(file_server, tmp_path):
    """50 MB through the server: its memory does not grow by the file's size."""
    size = 50 * 1024 * 1024
    big = random_file(tmp_path / "big.bin", size, seed=2)
    expected = hashlib.sha256()
    with open(big, "rb") as handle:
        while block := handle.read(1 << 20):
            expected.update(block)
    lines = Lines()
    server = file_server(on_request=lines)
    url = server.publish(big)
    before = rss_kb()
    peak = before
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Length"] == str(size)
        while block := response.read(256 * 1024):
            digest.update(block)
            received += len(block)
            peak = max(peak, rss_kb())
    assert received == size and digest.hexdigest() == expected.hexdigest()
    # server and client share this process: neither holds the file
    assert peak - before < 20 * 1024, f"RSS grew by {peak - before} kB for a 50 MB file"
    assert lines.wait(1) == [f"GET /big.bin 200 {size} bytes from 127.0.0.1"]


def test_concurrent_downloads(file_server, tmp_path):
    server = file_server()
    files = [random_file(tmp_path / f"f{i}.bin", 2_000_000 + i, seed=i) for i in range(4)]
    urls = [server.publish(path) for path in files]
    results: dict[int, bytes] = {}
    failures: list[BaseException] = []

    def fetch(index: int) -> None:
        try:
            results[index] = get(urls[index % len(urls)])[2]
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures
    assert len(results) == 12
    for index, body in results.items():
        assert body == files[index % len(files)].read_bytes()


def test_slow_client_blocks_neither_others_nor_stop(tmp_path):
    big = random_file(tmp_path / "big.bin", 30 * 1024 * 1024, seed=3)
    small = random_file(tmp_path / "small.bin", 1000, seed=4)
    lines = Lines()
    server = FileServer(on_request=lines).start()
    try:
        big_path = urlsplit(server.publish(big)).path
        small_url = server.publish(small)
        with raw_client(server.port) as slow:
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.sendall(f"GET {big_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            first = slow.recv(4096)  # the download has started; then it stops reading
            assert first.startswith(b"HTTP/1.1 200")
            # another client is served meanwhile
            started = time.monotonic()
            assert get(small_url)[2] == small.read_bytes()
            assert time.monotonic() - started < 2
            # stop() cuts the slow download and returns promptly
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 2
            slow.settimeout(10)
            received = len(first)
            with contextlib.suppress(ConnectionResetError):
                while chunk := slow.recv(1 << 20):
                    received += len(chunk)
            assert received < 30 * 1024 * 1024  # cut short
    finally:
        server.stop()
    aborted = [line for line in lines.wait(2) if line.startswith("GET /big.bin 200 ")]
    assert aborted and "aborted" in aborted[0] and f"of {30 * 1024 * 1024} bytes" in aborted[0]
    assert not [t for t in threading.enumerate() if t.name.startswith("fileserver")]


def test_stop_with_an_idle_keep_alive_connection(tmp_path, overlay):
    server = FileServer().start()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", urlsplit(server.publish(overlay)).path)
        connection.getresponse().read()
        # the connection stays open, its thread waits for the next request
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
    finally:
        connection.close()
        server.stop()
