"""Servers on 127.0.0.1 for reading shards from a bucket: moto's S3, a proxy in front of it that
counts, delays and fails requests, and a static web server with Range support.

Used by tests/test_bucket.py and benchmarks/bench_bucket.py; nothing here reaches past the loopback.
"""

from __future__ import annotations

import http.client
import http.server
import io
import re
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

DENIED = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"""


class Proxy(http.server.ThreadingHTTPServer):
    """Forwards every request to ``upstream`` (host, port), after ``delay`` seconds.

    ``requests`` counts them by (method, path without the query); ``fail`` maps a substring of the
    path to how many of the next requests matching it get a 503; ``deny`` holds bucket names whose
    every request gets a 403 AccessDenied; ``cut`` maps a substring to how many responses to end
    after half of their body (a dropped connection).
    """

    daemon_threads = True

    def __init__(self, upstream: tuple[str, int], delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream, self.delay = upstream, delay
        self.requests: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[float, str, str]] = []  # (time.time(), method, path) of each request
        self.fail: dict[str, int] = {}
        self.cut: dict[str, int] = {}
        self.deny: set[str] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True, name="bucket-proxy").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def gets(self, part: str = "") -> int:
        """GET requests so far whose path holds ``part``."""
        with self.lock:
            return sum(n for (method, path), n in self.requests.items() if method == "GET" and part in path)

    def _take(self, table: dict[str, int], path: str) -> bool:
        with self.lock:
            for part, left in table.items():
                if left > 0 and part in path:
                    table[part] = left - 1
                    return True
        return False


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Proxy

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        path = self.path.partition("?")[0]
        with self.server.lock:
            self.server.requests[self.command, path] += 1
            self.server.log.append((time.time(), self.command, path))
        if self.server.delay:
            time.sleep(self.server.delay)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if path.strip("/").split("/")[0] in self.server.deny:
            return self._reply(403, DENIED)
        if self.server._take(self.server.fail, path):
            return self._reply(503, b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>")
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        cut = self.command == "GET" and self.server._take(self.server.cut, path)
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data[: len(data) // 2] if cut else data)
        if cut:
            self.close_connection = True

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


def start_moto():
    """moto's S3 in server mode on a free port of 127.0.0.1; ``(server, (host, port))``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    return server, server.get_host_and_port()


class RangeFiles(http.server.SimpleHTTPRequestHandler):
    """A static file server that answers ``Range: bytes=a-b`` and counts GET requests."""

    protocol_version = "HTTP/1.1"
    counts: Counter[str] = Counter()

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        type(self).counts[self.path] += 1
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data, size = path.read_bytes(), path.stat().st_size
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = 0, size - 1
        if wanted:
            start, end = int(wanted[1]), min(int(wanted[2] or size - 1), size - 1)
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{path.stat().st_mtime_ns:x}-{size:x}"')
        self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            self.wfile.write(data[start : end + 1])


def serve_files(folder: Path) -> http.server.ThreadingHTTPServer:
    """:class:`RangeFiles` over ``folder`` on a free port of 127.0.0.1, in a thread."""

    class Handler(RangeFiles):
        counts: Counter[str] = Counter()

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="range-files").start()
    return server


def write_shards(folder: Path, images: list[bytes], labels: list[int], shards: int, stem: str = "train"):
    """``images`` as WebDataset shards ``{stem}-000000.tar``..., in order, about equal in size."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, part in enumerate(np.array_split(np.arange(len(images)), shards)):
        path = folder / f"{stem}-{k:06d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in part.tolist():
                for name, data in ((f"{i:08d}.jpg", images[i]), (f"{i:08d}.cls", str(labels[i]).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def upload(endpoint: str, bucket: str, files: list[Path], prefix: str = "") -> None:
    """Create ``bucket`` on the S3 server at ``endpoint`` and put ``files`` under ``prefix``."""
    import boto3

    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
        aws_secret_access_key="test",
    )  # fmt: skip
    client.create_bucket(Bucket=bucket)
    for file in files:
        client.upload_file(str(file), bucket, prefix + file.name)


def s3_environment(endpoint: str) -> dict[str, str]:
    """What a process needs to reach the local S3 server (test credentials only)."""
    return {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
    }  # fmt: skip


def jpegs(count: int, side: int = 48, seed: int = 0) -> list[bytes]:
    """Small JPEGs of random blocks (fast to make and to decode)."""
    from PIL import Image

    generator, out = np.random.default_rng(seed), []
    for _ in range(count):
        pixels = generator.integers(0, 255, (side // 8, side // 8, 3), np.uint8).repeat(8, 0).repeat(8, 1)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out

