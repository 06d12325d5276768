"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams.

Python HTTP clients spend more CPU per request than the servers we measure;
this one pre-builds every request's bytes and only parses the status line and
Content-Length, so on its own core it outruns a one-core server.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    bodies_not_ok: int = 0

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def build_request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def build_get(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()


async def _connection(host, port, requests, deadline, result: Result, ok_body: bytes | None):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            try:
                request = next(requests)
            except StopIteration:
                return
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            result.latencies.append(time.perf_counter() - started)
            status = int(status_line.split()[1])
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if ok_body is not None and body != ok_body:
                result.bodies_not_ok += 1
    finally:
        writer.close()


async def run(host: str, port: int | list[int], requests, connections: int, seconds: float,
              ok_body: bytes | None = b"OK") -> Result:
    """`ok_body`: the body every answer must have (PayTR's OK); None checks only the status.
    Several ports: the connections are shared among them in turn, as a proxy's upstream would."""
    result = Result()
    iterator = iter(requests)
    started = time.perf_counter()
    deadline = started + seconds
    ports = port if isinstance(port, list) else [port]
    await asyncio.gather(*(_connection(host, ports[i % len(ports)], iterator, deadline, result, ok_body)
                           for i in range(connections)))
    result.seconds = time.perf_counter() - started
    return result
