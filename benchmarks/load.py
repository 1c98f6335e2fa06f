"""A closed-loop load generator on loopback: N clients, each sending its next request when its last one
is answered, for a bounded time and count; latencies, statuses, batch sizes and the server's CPU use."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import psutil

__all__ = ["LoadResult", "run_load"]


@dataclass
class LoadResult:
    """What one load run measured."""

    concurrency: int
    duration_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_token: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    batch_sizes: Counter[int] = field(default_factory=Counter)
    texts: list[str] = field(default_factory=list)
    cpu_percent: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    def percentile(self, q: float, values: list[float] | None = None) -> float:
        data = self.latencies if values is None else values
        return float(np.percentile(data, q)) if data else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "requests": sum(self.statuses.values()) + sum(self.errors.values()),
            "ok": self.ok,
            "req_per_s": self.ok / self.duration_s if self.duration_s else 0.0,
            "p50_s": self.percentile(50),
            "p95_s": self.percentile(95),
            "p99_s": self.percentile(99),
            "ttft_p50_s": self.percentile(50, self.first_token) if self.first_token else None,
            "statuses": dict(sorted(self.statuses.items())),
            "errors": dict(self.errors),
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "cpu_percent": round(self.cpu_percent, 1),
        }


def _cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


async def _client(
    session: aiohttp.ClientSession,
    url: str,
    body: Callable[[int], dict[str, Any]],
    counter: list[int],
    stop: Callable[[], bool],
    result: LoadResult,
    stream: bool,
    read_text: Callable[[Any], str] | None,
) -> None:
    while not stop():
        index = counter[0]
        counter[0] += 1
        started = time.perf_counter()
        try:
            async with session.post(url, json=body(index)) as response:
                result.statuses[response.status] += 1
                if stream:
                    pieces, first = [], None
                    async for line in response.content:
                        text = line.decode().strip()
                        if not text.startswith("data: ") or text == "data: [DONE]":
                            continue
                        piece = json.loads(text[6:])["choices"][0].get("text") or ""
                        if first is None and piece:  # the first generated text, not a role chunk
                            first = time.perf_counter() - started
                        pieces.append(piece)
                    if response.status == 200:
                        result.first_token.append(
                            first if first is not None else time.perf_counter() - started
                        )
                        result.texts.append("".join(pieces))
                else:
                    payload = await response.read()
                    if response.status == 200 and read_text is not None:
                        result.texts.append(read_text(json.loads(payload)))
                if "X-Batch-Size" in response.headers:
                    result.batch_sizes[int(response.headers["X-Batch-Size"])] += 1
            if result.statuses and response.status == 200:
                result.latencies.append(time.perf_counter() - started)
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            result.errors[type(err).__name__] += 1


def run_load(
    url: str,
    body: Callable[[int], dict[str, Any]],
    concurrency: int,
    *,
    duration_s: float = 15.0,
    max_requests: int = 20_000,
    warmup_requests: int = 4,
    stream: bool = False,
    read_text: Callable[[Any], str] | None = None,
    server_pid: int | None = None,
    timeout_s: float = 120.0,
) -> LoadResult:
    """Send `body(i)` to `url` from `concurrency` closed-loop clients for `duration_s` (or until
    `max_requests` were sent), after a few unmeasured warm-up requests."""

    async def main() -> LoadResult:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            warm = LoadResult(concurrency)
            warm_count = [0]
            await asyncio.gather(
                *(
                    _client(
                        session,
                        url,
                        body,
                        warm_count,
                        lambda: warm_count[0] >= warmup_requests,
                        warm,
                        stream,
                        read_text,
                    )
                    for _ in range(min(concurrency, warmup_requests))
                )
            )
            result = LoadResult(concurrency)
            counter = [0]
            deadline = time.perf_counter() + duration_s
            cpu_before, started = _cpu_seconds(server_pid), time.perf_counter()

            def stop() -> bool:
                return counter[0] >= max_requests or time.perf_counter() >= deadline

            await asyncio.gather(
                *(
                    _client(session, url, body, counter, stop, result, stream, read_text)
                    for _ in range(concurrency)
                )
            )
            result.duration_s = time.perf_counter() - started
            if server_pid is not None:
                result.cpu_percent = 100 * (_cpu_seconds(server_pid) - cpu_before) / result.duration_s
            return result

    return asyncio.run(main())
