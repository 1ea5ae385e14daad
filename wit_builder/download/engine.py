"""A task's shards in an executor: many requests in flight on one event loop, politely, then
resized on a small thread pool and written as img2dataset writes a shard (output.py).

img2dataset runs one thread per URL in flight and a new connection (and TLS handshake) per
image; on a slow web most of its threads wait and its CPU goes to handshakes. Here one asyncio
loop per shard task keeps up to `in_flight` requests open through one fetch.Fetcher (aiohttp:
keep-alive connections pooled per host), and the CPU work (image checks, decode, resize,
encode: libjpeg-turbo and OpenCV, which release the GIL) runs on `resize_threads` threads, so
the network never waits for the CPU and the CPU never waits for the network.

The scheduler is polite per host (host name), as a crawler must be and img2dataset is not:
- at most `connections_per_host` requests to a host at once (aiohttp's `limit_per_host` is the
  hard cap on its connections, redirect hops included), the shard's URLs taken host by host in
  turn so that connections are reused;
- robots.txt read once per host before its other URLs start, and its `Crawl-delay` kept
  between request starts (a host asking for more than `max_crawl_delay` is skipped:
  `robots_txt: crawl_delay`);
- a 429 or 503 with `Retry-After` pauses the whole host that long (at most `max_crawl_delay`),
  counted in `_stats.json` as `host_backoffs`.

Each URL has one deadline, `total_timeout` from the moment it starts: robots.txt (when it asks
first), DNS, connects, TLS, every redirect hop, the body, retries, and the image checks and
resize on the pool (what is still there at the deadline is `timeout: total`). Bodies held in
the process are capped by `max_bytes_in_flight` (fetch.ByteBudget).

`download_image` is img2dataset's per-URL contract (one URL on a loop of its own).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import heapq
import io
import time

from wit_builder import per_process
from wit_builder.download import robots
from wit_builder.download.fetch import Fetcher, HttpRefused, Policy, error_text, image_error, transient
from wit_builder.download.output import ShardOutput
from wit_builder.download.resize import BoundedResizer
from wit_builder.safety import URL_DEADLINE

ROBOTS_DIRECTIVES = ["noai", "noimageai"]


class Host:
    """One host's queue and manners in this task."""

    def __init__(self):
        self.urls: collections.deque = collections.deque()  # (key, url, deadline or None)
        self.active = 0
        self.next_start = 0.0  # monotonic: Crawl-delay and Retry-After push it on
        self.delay = 0.0
        self.waiting = False  # in the scheduler's ready queue or timer heap
        self.robots_pending = False


class Scheduler:
    """URLs fetched politely and processed on the pool, their outcomes handed to `done`."""

    def __init__(self, policy: Policy, section, fetcher: Fetcher, process, token: str,
                 directives):
        self.policy, self.section, self.fetcher, self.process = policy, section, fetcher, process
        self.token, self.directives = token, directives

    def opted_out(self, headers) -> bool:
        """Whether an `X-Robots-Tag` of the answer forbids us (`noai`, `noimageai`), for all
        robots or for our token, as img2dataset reads it."""
        if not self.directives:
            return False
        for value in headers.getall("X-Robots-Tag", ()):
            parts = value.split(":", 1)  # "noai" for every robot, "wit-builder: noai" for us
            named = parts[0].strip().lower() if len(parts) == 2 else ""
            if (not named or named == self.token) and any(
                    d.strip().lower() in self.directives for d in parts[-1].split(",")):
                return True
        return False

    async def run(self, batches, in_flight: int, done, lookahead: int = 0) -> None:
        """Fetch the (key, url) items of each batch in `batches` (an iterator), at most
        `in_flight` at once, hosts in turn; `done(key, outcome, host backoffs)` for each.

        The next batch joins while fewer than `lookahead` URLs wait to start, so a task's next
        shard is under way while the slowest answers of the last one are still coming; each
        host takes its URLs in order, so the earlier shard still finishes first."""
        hosts: dict = {}
        ready: collections.deque = collections.deque()
        timers: list = []  # (time, tie, host)
        running: dict = {}  # fetch task -> (host, key, url, deadline)
        processing: dict = {}  # task on the pool -> key: its host's slot is free again
        retried: collections.Counter = collections.Counter()  # key -> further attempts made
        backoffs: collections.Counter = collections.Counter()  # key -> Retry-After pauses
        queued = 0  # URLs not started yet
        batches = iter(batches)
        tie = 0

        def requeue(host: Host) -> None:
            nonlocal tie
            if host.waiting or not host.urls or host.robots_pending:
                return
            if host.active >= self._per_host() or (host.delay and host.active):
                return  # a finishing request requeues it
            host.waiting = True
            if host.next_start > time.monotonic():
                tie += 1
                heapq.heappush(timers, (host.next_start, tie, host))
            else:
                ready.append(host)

        more = True
        while True:
            while more and queued <= lookahead:  # (a shard may have no URLs)
                batch = next(batches, None)
                more = batch is not None
                for key, url in batch or ():
                    name = robots.host_of(url)[1] if isinstance(url, str) else None
                    host = hosts.setdefault(name, Host())
                    host.urls.append((key, url, None))
                    queued += 1
                    requeue(host)
            if not (queued or running or processing):
                return
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                ready.append(heapq.heappop(timers)[2])
            while ready and len(running) < in_flight:
                host = ready.popleft()
                host.waiting = False
                if host.next_start > now:
                    requeue(host)
                    continue
                key, url, deadline = host.urls.popleft()
                queued -= 1
                if deadline is None:
                    deadline = now + self.policy.total_timeout
                    if self.policy.honor_robots_txt and isinstance(url, str):
                        host.robots_pending = robots.known(url) is None
                host.active += 1
                if host.delay:
                    host.next_start = now + host.delay
                task = asyncio.ensure_future(self.one(url, deadline, host))
                running[task] = (host, key, url, deadline)
                requeue(host)
            if not (running or processing):
                await asyncio.sleep(max(0.0, timers[0][0] - time.monotonic()) if timers else 0)
                continue
            wait = max(0.0, timers[0][0] - time.monotonic()) if timers else None
            finished, _ = await asyncio.wait(running.keys() | processing.keys(), timeout=wait,
                                             return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                if task in processing:
                    key = processing.pop(task)
                    done(key, task.result(), backoffs.pop(key))
                    continue
                host, key, url, deadline = running.pop(task)
                host.active -= 1
                host.robots_pending = False
                data, error, is_transient, backed_off = task.result()
                backoffs[key] += backed_off
                retried_now = (is_transient and retried[key] < self.policy.retries
                               and time.monotonic() < deadline)
                if error is None:
                    retried.pop(key, None)
                    processing[asyncio.ensure_future(self.processed(data, deadline))] = key
                elif retried_now:
                    retried[key] += 1
                    host.urls.appendleft((key, url, deadline))
                    queued += 1
                else:
                    retried.pop(key, None)
                    done(key, (None, None, error), backoffs.pop(key))
                requeue(host)

    def _per_host(self) -> int:
        return self.policy.connections_per_host or 1 << 30

    async def one(self, url, deadline: float, host: Host):
        """(body, None, False, False), or (None, error, whether the failure is worth another
        attempt, whether the host was told to pause), for one attempt at `url` within
        `deadline`. The host's slot is free once the body is in: the checks and resize run
        after it (processed), so the next request to the host never waits for the CPU."""
        URL_DEADLINE.set(deadline)  # this task's context: the resolver ends before it
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                if self.policy.honor_robots_txt and isinstance(url, str):
                    refusal = await self._robots(url, host)
                    if refusal:
                        return None, refusal, False, False
                return await self.fetcher.fetch(url, self.opted_out), None, False, False
        except BaseException as exc:  # noqa: BLE001 - one bad URL must never fail the shard
            error = self._failure(exc, deadline)
            backed_off = isinstance(exc, HttpRefused) and exc.retry_after is not None
            if backed_off:
                pause = min(exc.retry_after, self.section.max_crawl_delay)
                host.next_start = max(host.next_start, time.monotonic() + pause)
            return None, error, transient(error), backed_off

    async def processed(self, data: bytes, deadline: float):
        """(data, resize result, error) once the pool has checked and resized `data`, within
        the URL's deadline; the body's bytes go back to the budget."""
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                return await self._processed(data)
        except BaseException as exc:  # noqa: BLE001 - one bad image must never fail the shard
            return None, None, self._failure(exc, deadline)
        finally:
            self.fetcher.budget.give(len(data))

    @staticmethod
    def _failure(exc: BaseException, deadline: float) -> str:
        """The error text of `exc`; a cancellation before the deadline is the shard's own and
        goes on."""
        if isinstance(exc, asyncio.CancelledError) and time.monotonic() < deadline:
            raise exc
        return error_text(exc, time.monotonic() >= deadline)

    async def _robots(self, url: str, host: Host) -> str | None:
        rules = await robots.rules(url, self.fetcher)
        if not rules.can_fetch(url, self.token):
            return "robots_txt: disallowed"
        delay = rules.crawl_delay(self.token) or 0.0
        if delay > self.section.max_crawl_delay:
            return "robots_txt: crawl_delay"
        if delay and not host.delay:  # this URL's request starts now: the next one waits
            host.next_start = time.monotonic() + delay
        host.delay = float(delay)
        return None

    async def _processed(self, data: bytes):
        """(data, resize result, error) once the pool has checked and resized `data`."""
        future = _pool(self.section).submit(self.process, data)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # not started yet: never runs
            raise


def _loop_time(deadline: float) -> float:
    """A time.monotonic() moment on the running loop's clock."""
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


def _pool(section) -> concurrent.futures.ThreadPoolExecutor:
    return per_process.get("resize threads", section.resize_threads, lambda: (
        concurrent.futures.ThreadPoolExecutor(max_workers=section.resize_threads,
                                              thread_name_prefix="resize")))


def _resizer(section) -> BoundedResizer:
    return BoundedResizer(image_size=section.image_size, resize_mode=section.resize_mode,
                          resize_only_if_bigger=section.resize_only_if_bigger,
                          encode_quality=section.encode_quality, encode_format="jpg")


def _checker_and_resizer(policy: Policy, resizer):
    """What the pool runs per image: the header checks, then img2dataset's resize contract."""

    def process(data: bytes):
        error = image_error(data, policy)
        if error:
            return data, None, error
        return data, resizer(io.BytesIO(data)), None
    return process


async def one_url(url, policy: Policy, token, directives) -> tuple[bytes | None, str | None]:
    """(image bytes, None) or (None, error) for one URL through the engine's per-URL path."""
    fetcher = Fetcher(policy, in_flight=4, budget_bytes=policy.max_bytes)
    shard = Scheduler(policy, _OneUrl, fetcher, lambda data: (data, None, image_error(data, policy)),
                  token or policy.robots_token, directives)
    outcome = []
    try:
        await shard.run([[(0, url)]], 1, lambda key, result, _backoffs: outcome.append(result))
    finally:
        await fetcher.close()
    data, _, error = outcome[0]
    return (None, error) if error else (data, None)


class _OneUrl:
    """The engine settings `one_url` runs with."""

    resize_threads = 1
    max_crawl_delay = 10.0


def download_image(row, timeout, user_agent_token, disallowed_header_directives, *_, policy,
                   **__):
    """img2dataset's `download_image` contract for one URL: (key, BytesIO | None, error), the
    bytes checked as an image. Runs the engine's own per-URL path (robots.txt, retries, one
    deadline) on a loop of its own."""
    key, url = row
    data, error = asyncio.run(one_url(url, policy, user_agent_token,
                                      disallowed_header_directives))
    return key, (io.BytesIO(data) if data is not None else None), error


def download_shards(section, out_dir: str, column_list: list, pieces: list) -> None:
    """Download the shards' pieces (shards.Piece: rows of a shard's feather file, shards.py
    made them) in this executor, one after the other on one loop, each under way before the
    one before it ends."""
    asyncio.run(_download_shards(section, out_dir, column_list, pieces))


async def _download_shards(section, out_dir: str, column_list: list, pieces: list) -> None:
    policy = Policy.from_config(section)
    in_flight = section.threads or section.in_flight  # `threads`: img2dataset's name for it
    fetcher = Fetcher(policy, in_flight=in_flight, budget_bytes=section.max_bytes_in_flight)
    engine = Scheduler(policy, section, fetcher, _checker_and_resizer(policy, _resizer(section)),
                   policy.robots_token, ROBOTS_DIRECTIVES if section.honor_robots_tag else None)

    def batches():
        for piece in pieces:
            output = ShardOutput(section, out_dir, column_list, piece)
            yield [((output, i), url) for i, url in enumerate(output.urls)]

    def done(key, outcome, backoffs) -> None:
        output, index = key
        output.record(index, outcome, backoffs)

    try:
        await engine.run(batches(), in_flight, done, section.samples_per_shard)
    finally:
        await fetcher.close()
