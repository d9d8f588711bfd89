#!/usr/bin/env python3
"""bench_jetstream.py: the load generator behind scripts/bench-jetstream.sh (read its header first).

It drives a running three-server JetStream cluster and prints one line per figure, the figures of
`conclave bench topic` measured on NATS JetStream with the same message size:

  a  publish, 1 publisher, each publish waits for its ack          (publishers=1 batch=1)
  b  publish, 1 publisher, a window of --batch async publishes      (publishers=1 batch=W)
  c  publish, --publishers publishers, each waits for its ack       (publishers=256 batch=1)
  d  publish, --publishers publishers, each with a window of
     --many-batch async publishes                                   (publishers=256 batch=W)
  e  publish-to-delivery latency: a publisher at --rate msgs/s, one durable pull consumer read by
     --consumers workers (one group), explicit acks; latency = delivery to a worker minus the
     instant written in the payload just before the publish (one process, one monotonic clock);
     the line says how long after the last publish the last delivery came: far more than the p99
     means that the cluster could not keep up with --rate, and the latencies are queueing delays
  f  group throughput: --drain-messages messages published first, then --consumers workers of one
     durable pull consumer drain them, acking each; msgs/s from the workers' start to the last ack,
     once with plain acks (fire and forget, JetStream's default) and once with double acks (each
     ack waits for the server's confirmation; 2.10 confirms once the ack is committed by the
     consumer's Raft group, 2.9 as soon as its leader processed it), as --ack-modes says

"batch=W" means W publishes in flight, each acked on its own: JetStream 2.9 has no batch publish
(atomic batches came in 2.12), so the window of async publishes is its batched case.

Publish figures run --warmup seconds (not counted), then --duration seconds; msgs/s counts the acks
received in the measured window; p50/p99 are each publish's time to its ack. A failed or unanswered
publish or delivery is counted, printed, and makes the exit status 1. Each line ends with the CPU
this process and the three servers used over the figure's wall time (100% = one core), so that a
reader can tell a client-bound figure from a server-bound one.

Needs nats-py (pip install nats-py); the shell script makes a venv for it.
"""

import argparse
import asyncio
import collections
import json
import math
import os
import struct
import sys
import time

import nats
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

STREAM = "BENCH"
ALL_FIGURES = "abcdef"
# Status headers the server puts on pull replies that carry no message (404 no messages, 408
# request expired, 409 limits, 100 heartbeat).
STATUS = "Status"
# Payload prefix of the latency figure: publish instant (monotonic ns) and sequence number.
STAMP = struct.Struct(">QQ")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def now_ns():
    return time.monotonic_ns()


def parse_args(argv):
    p = argparse.ArgumentParser(description="JetStream figures beside `conclave bench topic`")
    p.add_argument("--servers", required=True, help="comma-separated nats:// URLs, one per server")
    p.add_argument("--server-names", default="n1,n2,n3", help="server_name of each URL, in order")
    p.add_argument("--server-pids", default="", help="comma-separated pids, for the CPU column")
    p.add_argument("--label", default="", help="a word printed in every line, e.g. the sync policy")
    p.add_argument("--figures", default=ALL_FIGURES, help="which figures to run (default: abcdef)")
    p.add_argument("--size", type=int, default=256, help="message payload bytes (default 256)")
    p.add_argument("--duration", type=float, default=10, help="measured seconds per figure")
    p.add_argument("--warmup", type=float, default=1, help="seconds run first, not counted")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--batch", type=int, default=256, help="window of figure b (default 256)")
    p.add_argument("--publishers", type=int, default=256, help="publishers of c and d")
    p.add_argument("--many-batch", type=int, default=16, help="window per publisher in d")
    p.add_argument("--connections", type=int, default=8, help="connections shared by c and d")
    p.add_argument("--target", choices=["leader", "any"], default="leader",
                   help="connect clients to the stream's (consumer's) leader, or spread them")
    p.add_argument("--rate", type=int, default=1000, help="publish rate of figure e (msgs/s)")
    p.add_argument("--consumers", type=int, default=8, help="workers of the group in e and f")
    p.add_argument("--pull-batch", type=int, default=64, help="messages per pull request")
    p.add_argument("--drain-messages", type=int, default=50000, help="messages drained in f")
    p.add_argument("--ack-modes", default="plain,double", help="ack modes of f: plain, double")
    args = p.parse_args(argv)
    if args.size < STAMP.size:
        p.error(f"--size must be at least {STAMP.size} bytes (the latency figure's stamp)")
    if set(args.figures) - set(ALL_FIGURES) or not args.figures:
        p.error(f"--figures takes letters from {ALL_FIGURES}")
    args.ack_modes = [m for m in args.ack_modes.split(",") if m]
    if not args.ack_modes or set(args.ack_modes) - {"plain", "double"}:
        p.error("--ack-modes takes plain and/or double")
    for name in ("batch", "publishers", "many_batch", "connections", "rate", "consumers",
                 "pull_batch", "drain_messages"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    args.servers = args.servers.split(",")
    args.server_names = args.server_names.split(",")
    args.server_pids = [int(x) for x in args.server_pids.split(",") if x]
    return args


# --- measuring ------------------------------------------------------------------------------------


def quantile_ms(sorted_ns, q):
    """Nearest-rank quantile of sorted nanosecond samples, in milliseconds."""
    if not sorted_ns:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1e6


def fmt_ms(value):
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def server_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total


class CpuMeter:
    """CPU of this process and of the servers over a wall-clock span, in % of one core, and the
    machine's 1-minute load average at its end (other work on the machine skews every figure)."""

    def __init__(self, pids):
        self.pids = pids
        self.wall = time.monotonic()
        self.own = time.process_time()
        self.servers = server_ticks(pids)

    def text(self):
        wall = max(time.monotonic() - self.wall, 1e-9)
        own = 100 * (time.process_time() - self.own) / wall
        servers = 100 * (server_ticks(self.pids) - self.servers) / CLK_TCK / wall
        load = os.getloadavg()[0]
        return f"[cpu: client {own:.0f}%, servers {servers:.0f}%; load {load:.2f}]"


class Failures:
    """Every failed or unanswered operation, by kind; any makes the exit status 1."""

    def __init__(self):
        self.counts = collections.Counter()
        self.first = {}

    def add(self, kind, error):
        self.counts[kind] += 1
        self.first.setdefault(kind, repr(error))

    def summary(self):
        return ", ".join(f"{n} {k} (first: {self.first[k]})" for k, n in sorted(self.counts.items()))


# --- cluster and stream ---------------------------------------------------------------------------


async def connect(url, name):
    return await nats.connect(servers=[url], name=name, connect_timeout=5,
                              max_reconnect_attempts=3, pending_size=64 * 1024 * 1024)


async def ensure_stream(nc, args, deadline_s=30):
    """Create the stream, retrying while the cluster elects its meta leader."""
    js = nc.jetstream(timeout=10)
    config = StreamConfig(name=STREAM, subjects=["bench.>"], storage=StorageType.FILE,
                          num_replicas=args.replicas, retention=RetentionPolicy.LIMITS,
                          discard=DiscardPolicy.OLD, max_bytes=4 * 1024**3)
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            await js.add_stream(config)
            break
        except Exception as error:  # noqa: BLE001 - no meta leader yet, timeouts: retry
            if time.monotonic() > give_up:
                raise RuntimeError(f"could not create stream {STREAM}: {error}") from error
            await asyncio.sleep(0.5)
    while True:  # wait for the stream's own Raft group to elect a leader
        info = await js.stream_info(STREAM)
        if info.cluster and info.cluster.leader:
            return info
        if time.monotonic() > give_up:
            raise RuntimeError(f"stream {STREAM} has no leader")
        await asyncio.sleep(0.2)


def url_of(args, server_name):
    if args.target == "leader" and server_name in args.server_names:
        return args.servers[args.server_names.index(server_name)]
    return None


def urls_for(args, leader_name, count):
    """count URLs: all the leader's, or spread over the servers."""
    leader = url_of(args, leader_name)
    if leader:
        return [leader] * count
    return [args.servers[i % len(args.servers)] for i in range(count)]


async def purge(admin):
    """Empties the stream, so that each figure starts from an empty store; the leader's name."""
    js = admin.jetstream(timeout=30)
    await js.purge_stream(STREAM)
    info = await js.stream_info(STREAM)
    return info.cluster.leader


# --- publishing -----------------------------------------------------------------------------------


class PublishStats:
    def __init__(self, measure_from, stop_at):
        self.measure_from = measure_from
        self.stop_at = stop_at
        self.acked = 0
        self.latencies = []

    def record(self, started, finished):
        """msgs/s counts the acks that arrive in the window; latencies are those of the publishes
        sent in it (however late their acks: a saturated window's are longer than the window)."""
        if self.measure_from <= finished <= self.stop_at:
            self.acked += 1
        if self.measure_from <= started < self.stop_at:
            self.latencies.append(finished - started)


async def sync_publisher(js, subject, payload, stats, failures):
    while True:
        started = now_ns()
        if started >= stats.stop_at:
            return
        try:
            await js.publish(subject, payload, timeout=10)
        except Exception as error:  # noqa: BLE001 - counted and reported
            failures.add("publish", error)
            continue
        stats.record(started, now_ns())


async def window_publisher(js, subject, payload, window, stats, failures, limit=None):
    """Keeps `window` publishes in flight until stop_at (or `limit` publishes)."""
    slots = asyncio.Semaphore(window)
    pending = set()
    sent = 0

    def done(future, started):
        pending.discard(future)
        slots.release()
        if future.cancelled() or future.exception() is not None:
            failures.add("publish", "cancelled" if future.cancelled() else future.exception())
        else:
            stats.record(started, now_ns())

    while (limit is None or sent < limit) and now_ns() < stats.stop_at:
        await slots.acquire()
        started = now_ns()
        future = await js.publish_async(subject, payload)
        pending.add(future)
        future.add_done_callback(lambda f, s=started: done(f, s))
        sent += 1
    if pending:
        _, unanswered = await asyncio.wait(set(pending), timeout=15)
        for future in unanswered:
            future.cancel()
    return sent


async def publish_figure(args, admin, failures, publishers, window):
    subject = "bench.pub"
    leader = await purge(admin)
    nconn = 1 if publishers == 1 else min(args.connections, publishers)
    conns = [await connect(u, f"bench-pub-{i}") for i, u in enumerate(urls_for(args, leader, nconn))]
    contexts = [nc.jetstream(timeout=10, publish_async_max_pending=1 << 30) for nc in conns]
    payload = os.urandom(args.size)
    start = now_ns()
    stats = PublishStats(start + int(args.warmup * 1e9), start + int((args.warmup + args.duration) * 1e9))
    meter = None

    async def start_meter():
        nonlocal meter
        await asyncio.sleep(args.warmup)
        meter = CpuMeter(args.server_pids)

    workers = [start_meter()]
    for i in range(publishers):
        js = contexts[i % len(contexts)]
        if window == 1:
            workers.append(sync_publisher(js, subject, payload, stats, failures))
        else:
            workers.append(window_publisher(js, subject, payload, window, stats, failures))
    await asyncio.gather(*workers)
    cpu = meter.text()
    for nc in conns:
        await nc.close()
    stats.latencies.sort()
    rate = stats.acked / args.duration
    p50, p99 = quantile_ms(stats.latencies, 0.5), quantile_ms(stats.latencies, 0.99)
    emit(f"jetstream publish publishers={publishers} batch={window} size={args.size}{label(args)}: "
         f"{rate:,.0f} msgs/s (p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)}) {cpu}")


def label(args):
    return f" {args.label}" if args.label else ""


def emit(line):
    print(line, flush=True)


# --- consuming ------------------------------------------------------------------------------------


class PullWorker:
    """One member of a group: keeps pull requests outstanding on the durable consumer and handles
    each message as it arrives (one at a time), acking it explicitly."""

    EXPIRES_S = 2.0

    def __init__(self, nc, consumer, batch, ack_mode, on_message, failures):
        self.nc = nc
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{consumer}"
        self.batch = batch
        self.ack_mode = ack_mode
        self.on_message = on_message
        self.failures = failures
        self.requests = collections.deque()  # [expires at (monotonic s), messages still owed]
        self.sub = None
        self.ticker = None

    async def start(self):
        self.inbox = self.nc.new_inbox()
        self.sub = await self.nc.subscribe(self.inbox, cb=self.handle)
        await self.top_up()
        self.ticker = asyncio.create_task(self.tick())

    async def stop(self):
        self.ticker.cancel()
        await self.sub.unsubscribe()

    async def tick(self):
        while True:
            await asyncio.sleep(self.EXPIRES_S / 8)
            await self.top_up()

    async def top_up(self):
        now = time.monotonic()
        while self.requests and self.requests[0][0] <= now:
            self.requests.popleft()
        owed = sum(r[1] for r in self.requests)
        if owed > self.batch // 2:
            return
        want = self.batch - owed
        request = {"batch": want, "expires": int(self.EXPIRES_S * 1e9)}
        # Counted as expired a little before the server expires it: asking twice is harmless.
        self.requests.append([now + self.EXPIRES_S - 0.2, want])
        await self.nc.publish(self.next_subject, json.dumps(request).encode(), reply=self.inbox)

    async def handle(self, msg):
        if msg.headers and msg.headers.get(STATUS):
            await self.top_up()
            return
        if self.requests:
            self.requests[0][1] -= 1
            if self.requests[0][1] <= 0:
                self.requests.popleft()
        self.on_message(msg)
        try:
            if self.ack_mode == "double":
                await self.nc.request(msg.reply, b"+ACK", timeout=10)
            else:
                await self.nc.publish(msg.reply, b"+ACK")
        except Exception as error:  # noqa: BLE001 - counted and reported
            self.failures.add("ack", error)
        await self.top_up()


def stream_seq(msg):
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>
    return int(msg.reply.split(".")[5])


async def start_group(args, admin, name, subject, ack_mode, on_message, failures):
    js = admin.jetstream(timeout=30)
    await js.add_consumer(STREAM, ConsumerConfig(
        durable_name=name, filter_subject=subject, ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL, ack_wait=30,
        max_ack_pending=args.consumers * args.pull_batch * 2))
    info = await js.consumer_info(STREAM, name)
    leader = info.cluster.leader if info.cluster else None
    conns, workers = [], []
    for i, url in enumerate(urls_for(args, leader, args.consumers)):
        nc = await connect(url, f"bench-{name}-{i}")
        conns.append(nc)
        workers.append(PullWorker(nc, name, args.pull_batch, ack_mode, on_message, failures))
    return conns, workers


async def stop_group(admin, name, conns, workers):
    for worker in workers:
        await worker.stop()
    for nc in conns:
        await nc.close()
    await admin.jetstream(timeout=30).delete_consumer(STREAM, name)


async def wait_until(predicate, timeout_s):
    give_up = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < give_up:
        await asyncio.sleep(0.005)
    return predicate()


async def latency_figure(args, admin, failures):
    subject = "bench.lat"
    leader = await purge(admin)
    total = int(args.rate * (args.warmup + args.duration))
    counted_from = int(args.rate * args.warmup)
    latencies, seen, last_delivery = [], set(), [0.0]

    def on_message(msg):
        received = now_ns()
        stamp, seq = STAMP.unpack_from(msg.data)
        if seq in seen:
            return
        seen.add(seq)
        last_delivery[0] = time.monotonic()
        if seq >= counted_from:
            latencies.append(received - stamp)

    conns, workers = await start_group(args, admin, "lat", subject, "plain", on_message, failures)
    for worker in workers:
        await worker.start()
    pub = await connect(urls_for(args, leader, 1)[0], "bench-lat-pub")
    js = pub.jetstream(timeout=10, publish_async_max_pending=1 << 30)
    padding = bytes(args.size - STAMP.size)
    acks = []
    meter = CpuMeter(args.server_pids)
    start = time.monotonic()
    for seq in range(total):
        delay = start + seq / args.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        acks.append(await js.publish_async(subject, STAMP.pack(now_ns(), seq) + padding))
    last_publish = time.monotonic()
    published_in = last_publish - start
    results = await asyncio.gather(*acks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            failures.add("publish", result)
    if not await wait_until(lambda: len(seen) >= total, 15):
        failures.add("delivery", f"{total - len(seen)} of {total} messages never delivered")
    cpu = meter.text()
    await pub.close()
    await stop_group(admin, "lat", conns, workers)
    latencies.sort()
    p50, p99 = quantile_ms(latencies, 0.5), quantile_ms(latencies, 0.99)
    emit(f"jetstream latency publish-to-delivery rate={args.rate}/s consumers={args.consumers} "
         f"size={args.size}{label(args)}: p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)} "
         f"({len(latencies):,} delivered, published at {total / published_in:,.0f}/s, "
         f"last delivered {max(0.0, last_delivery[0] - last_publish) * 1e3:,.0f} ms after the last "
         f"publish) {cpu}")


async def prepublish(args, admin, subject, leader, failures):
    nc = await connect(urls_for(args, leader, 1)[0], "bench-prepublish")
    js = nc.jetstream(timeout=10, publish_async_max_pending=1 << 30)
    stats = PublishStats(now_ns(), now_ns() + int(300e9))
    await window_publisher(js, subject, os.urandom(args.size), args.batch, stats, failures,
                           limit=args.drain_messages)
    await nc.close()
    return stats.acked


async def drain_figure(args, admin, failures, ack_mode):
    subject = "bench.drain"
    leader = await purge(admin)
    stored = await prepublish(args, admin, subject, leader, failures)
    seen, redelivered = set(), [0]

    def on_message(msg):
        seq = stream_seq(msg)
        if seq in seen:
            redelivered[0] += 1
        seen.add(seq)

    name = f"drain{ack_mode}"
    conns, workers = await start_group(args, admin, name, subject, ack_mode, on_message, failures)
    meter = CpuMeter(args.server_pids)
    start = time.monotonic()
    for worker in workers:
        await worker.start()
    done = await wait_until(lambda: len(seen) >= stored, 120)
    for nc in conns:  # the last plain acks are on the wire
        await nc.flush(timeout=10)
    elapsed = time.monotonic() - start
    cpu = meter.text()
    if not done:
        failures.add("delivery", f"{stored - len(seen)} of {stored} messages never delivered")
    await check_drained(admin, name, failures)
    await stop_group(admin, name, conns, workers)
    emit(f"jetstream group consumers={args.consumers} messages={stored} ack={ack_mode} "
         f"size={args.size}{label(args)}: {len(seen) / elapsed:,.0f} msgs/s "
         f"({elapsed:.2f} s, {redelivered[0]} redelivered) {cpu}")


async def check_drained(admin, name, failures):
    """Every delivered message acked, as the consumer's leader sees it (plain acks land late)."""
    js = admin.jetstream(timeout=30)
    give_up = time.monotonic() + 10
    while True:
        info = await js.consumer_info(STREAM, name)
        if info.num_ack_pending == 0 and info.num_pending == 0:
            return
        if time.monotonic() > give_up:
            failures.add("ack", f"consumer {name}: {info.num_ack_pending} unacked, "
                                f"{info.num_pending} undelivered")
            return
        await asyncio.sleep(0.05)


async def main(argv):
    args = parse_args(argv)
    failures = Failures()
    admin = await connect(args.servers[0], "bench-admin")
    info = await ensure_stream(admin, args)
    emit(f"# stream {STREAM}: {args.replicas} replicas, file storage, leader {info.cluster.leader}; "
         f"clients connect to {'the leader' if args.target == 'leader' else 'every server'}")
    figures = {
        "a": lambda: publish_figure(args, admin, failures, 1, 1),
        "b": lambda: publish_figure(args, admin, failures, 1, args.batch),
        "c": lambda: publish_figure(args, admin, failures, args.publishers, 1),
        "d": lambda: publish_figure(args, admin, failures, args.publishers, args.many_batch),
        "e": lambda: latency_figure(args, admin, failures),
    }
    for letter in args.figures:
        if letter == "f":
            for mode in args.ack_modes:
                await drain_figure(args, admin, failures, mode)
        else:
            await figures[letter]()
    await admin.jetstream(timeout=30).delete_stream(STREAM)
    await admin.close()
    if failures.counts:
        emit(f"jetstream FAILURES{label(args)}: {failures.summary()}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
