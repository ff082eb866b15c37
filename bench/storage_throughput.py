"""Files through the stack against the raw codec and crypto, and against single-core AES-256-GCM, in one run.

    .venv/bin/python -m bench.storage_throughput --size-mib 256

Starts a real nats-server and a real storage service process (a temporary home, local-only files so the
numbers are the pipeline's, not the P2P network's), then measures, interleaved in the same run:
  * aes: single-core AES-256-GCM over 256 KiB segments (the baseline the issue's goal is relative to)
  * raw: the pure core in this process: encrypt + erasure-code + BLAKE3 every segment (put), and check +
         decode + decrypt them back (get), k=4 of n=8
  * stack: `avadios.files.put_stream` / `get_to_path` through NATS into the service (which also writes the
         shards to disk and reads them back) — what `avadios files put/get` does minus HTTP
and the storage process's peak resident memory during the put and the get (psutil, sampled every 20 ms).
The goal in the issue: stack put+get throughput (size ÷ (put time + get time)) ÷ aes ≥ 0.25; peak RSS of a
1 GiB file's put/get ≤ 300 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from avadios import files
from avadios.services.storage.core import DEFAULT_SEGMENT_SIZE, FileReader, FileWriter
from avadios.transport import NatsChannel, connect
from avadios.v1 import storage_pb2
from avadios.v1.storage_nats import StorageClient
from tests.helpers import NatsProcess

MIB = 1 << 20
K, N = 4, 8


def aes_mib_s(total: int) -> float:
    key, nonce, segment = os.urandom(32), os.urandom(12), os.urandom(DEFAULT_SEGMENT_SIZE)
    aes = AESGCM(key)
    start = time.perf_counter()
    for _ in range(total // DEFAULT_SEGMENT_SIZE):
        aes.encrypt(nonce, segment, None)
    return total / MIB / (time.perf_counter() - start)


def raw_mib_s(total: int) -> tuple[float, float]:
    """The pure core alone; only 16 segments' shards are kept (the get decodes them in turn), so the figure is
    the core's cost, not the page faults of holding the whole file's shards in memory."""
    segment = os.urandom(DEFAULT_SEGMENT_SIZE)
    writer = FileWriter(K, N)
    count = total // DEFAULT_SEGMENT_SIZE
    kept = []
    start = time.perf_counter()
    for i in range(count):
        encoded = writer.add(segment)
        if i < 16:
            kept.append(encoded)
    put = time.perf_counter() - start
    file_layout, cap = writer.finish("bench")
    reader = FileReader(file_layout, cap)
    start = time.perf_counter()
    for i in range(count):
        e = kept[i % len(kept)]
        reader.segment(e.index, dict(list(enumerate(e.shards))[N - K :]))  # the parity shards: real decoding
    get = time.perf_counter() - start
    return total / MIB / put, total / MIB / get


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def stack(size: int, work: Path, nats: NatsProcess, pid: int) -> tuple[float, float, int, int]:
    nc = await connect(nats.url, "bench")
    client = StorageClient(NatsChannel(nc), default_timeout=60.0)
    for _ in range(200):
        try:
            await client.Hosting(storage_pb2.HostingRequest(), timeout=1.0)
            break
        except Exception:
            await asyncio.sleep(0.1)
    source = work / "input.bin"
    with source.open("wb") as f:  # written in pieces: the bench itself must not hold the file either
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
    with PeakRss(pid) as put_rss, source.open("rb") as f:
        start = time.perf_counter()
        info = await files.put_stream(client, f, "input.bin", k=K, n=N, local_only=True)
        put = time.perf_counter() - start
    with PeakRss(pid) as get_rss:
        start = time.perf_counter()
        path, written = await files.get_to_path(client, info.cap, work / "output.bin")
        get = time.perf_counter() - start
    assert written == size
    with source.open("rb") as a, path.open("rb") as b:  # byte-identical, compared a MiB at a time
        while chunk := a.read(MIB):
            assert chunk == b.read(MIB), "the file came back different"
    await nc.close()
    return put, get, put_rss.peak, get_rss.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256, help="file size (default 256 MiB)")
    args = parser.parse_args()
    size = args.size_mib * MIB
    nats = NatsProcess()
    nats.start()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        env = {**os.environ, "AVADIOS_HOME": str(home), "AVADIOS_NATS_URL": nats.url,
               "AVADIOS_STORAGE_QUOTA_BYTES": str(4 * size + (64 << 20)), "AVADIOS_LOG_LEVEL": "WARNING"}  # fmt: skip
        service = subprocess.Popen([sys.executable, "-m", "avadios.services.storage"], env=env)
        try:
            aes_before = aes_mib_s(min(size, 256 * MIB))
            raw_put, raw_get = raw_mib_s(min(size, 256 * MIB))
            put, get, put_rss, get_rss = asyncio.run(stack(size, work, nats, service.pid))
            aes_after = aes_mib_s(min(size, 256 * MIB))
        finally:
            service.terminate()
            service.wait(timeout=15)
            nats.stop()
    aes = (aes_before + aes_after) / 2
    round_trip = size / MIB / (put + get)
    print(f"file {args.size_mib} MiB, k={K} of n={N}, segments of {DEFAULT_SEGMENT_SIZE // 1024} KiB")
    print(f"aes-256-gcm, one core        {aes:8.1f} MiB/s   (before {aes_before:.1f}, after {aes_after:.1f})")
    print(f"raw core put / get           {raw_put:8.1f} / {raw_get:.1f} MiB/s")
    print(f"stack put / get              {size / MIB / put:8.1f} / {size / MIB / get:.1f} MiB/s")
    print(f"stack put+get (size/(tput+tget)) {round_trip:6.1f} MiB/s  ÷ aes = {round_trip / aes:.3f}  (goal >= 0.25)")
    print(f"stack ÷ raw core: put {size / MIB / put / raw_put:.3f}, get {size / MIB / get / raw_get:.3f}")
    print(f"storage process peak RSS     put {put_rss / MIB:.0f} MiB, get {get_rss / MIB:.0f} MiB  (goal <= 300 MiB)")


if __name__ == "__main__":
    main()
