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


async def _connection(host, port, requests, deadline, result: Result):
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
            if body != b"OK":
                result.bodies_not_ok += 1
    finally:
        writer.close()


async def run(host: str, port: int, requests, connections: int, seconds: float) -> Result:
    result = Result()
    iterator = iter(requests)
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_connection(host, port, iterator, deadline, result) for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result
