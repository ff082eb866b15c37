"""The verifier's records on disk: recent jobs (what `avadios jobs` shows) and holds waiting for their refund.

Jobs are appended as length-prefixed JobRecord messages to `<home>/verifier/jobs.bin`; a job written again
(its refund done) is appended again and the last copy wins. The file is rewritten with the newest
`KEEP_JOBS` when it holds twice that many. A hold that must be refunded later is kept as its HOLD block in
`<home>/verifier/refunds/<hash>.block` until the refund confirms, so a restart loses no refund.
"""

from __future__ import annotations

import struct
from pathlib import Path

from google.protobuf.message import DecodeError

from avadios.v1 import jobs_pb2, ledger_pb2

KEEP_JOBS = 1000
_LENGTH = struct.Struct(">I")


class JobBook:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.refunds_dir = directory / "refunds"
        self.refunds_dir.mkdir(parents=True, exist_ok=True)
        self.path = directory / "jobs.bin"
        self._jobs: dict[str, jobs_pb2.JobRecord] = {}
        self._written = 0
        self._load()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        at = 0
        while at + _LENGTH.size <= len(data):
            (size,) = _LENGTH.unpack_from(data, at)
            chunk = data[at + _LENGTH.size : at + _LENGTH.size + size]
            at += _LENGTH.size + size
            if len(chunk) < size:
                break  # a record cut short by a crash mid-write: what came before it stands
            try:
                record = jobs_pb2.JobRecord.FromString(chunk)
            except DecodeError:
                continue
            self._jobs.pop(record.job_id, None)  # re-inserted last: dicts keep insertion order, newest last
            self._jobs[record.job_id] = record
            self._written += 1

    def put(self, record: jobs_pb2.JobRecord) -> None:
        self._jobs.pop(record.job_id, None)
        self._jobs[record.job_id] = record
        with self.path.open("ab") as f:
            data = record.SerializeToString()
            f.write(_LENGTH.pack(len(data)) + data)
        self._written += 1
        if self._written > 2 * KEEP_JOBS:
            self._compact()

    def _compact(self) -> None:
        keep = list(self._jobs.values())[-KEEP_JOBS:]
        self._jobs = {r.job_id: r for r in keep}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(_LENGTH.pack(len(d)) + d for d in (r.SerializeToString() for r in keep)))
        tmp.replace(self.path)
        self._written = len(keep)

    def get(self, job_id: str) -> jobs_pb2.JobRecord | None:
        return self._jobs.get(job_id)

    def recent(self, limit: int) -> list[jobs_pb2.JobRecord]:
        return list(reversed(list(self._jobs.values())[-limit:]))

    # ---- holds whose refund waits for their expiry ------------------------------------------------------------

    def keep_for_refund(self, hold: ledger_pb2.LedgerBlock, digest: bytes) -> None:
        (self.refunds_dir / f"{digest.hex()}.block").write_bytes(hold.SerializeToString())

    def refunds_waiting(self) -> list[tuple[bytes, ledger_pb2.LedgerBlock]]:
        waiting = []
        for path in sorted(self.refunds_dir.glob("*.block")):
            try:
                waiting.append((bytes.fromhex(path.stem), ledger_pb2.LedgerBlock.FromString(path.read_bytes())))
            except (ValueError, DecodeError):
                path.rename(path.with_suffix(".unreadable"))  # kept for a person to look at, never retried
        return waiting

    def refunded(self, digest: bytes) -> None:
        (self.refunds_dir / f"{digest.hex()}.block").unlink(missing_ok=True)
