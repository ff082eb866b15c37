"""The files routes for the dashboard: list, upload, download, health and remove this node's stored files.

    GET    /api/files                 {"files": [{"cap", "name", "size", "segments", "shards", "hosters_alive",
                                      "health", ...}]}, health one of "healthy", "degraded", "unreadable"
    POST   /api/files                 multipart field `file` (+ optional form fields `k`, `n`, `local_only`)
                                      -> {"cap", "name", "size", ...}
    GET    /api/files/{cap}           the file's bytes (application/octet-stream, Content-Disposition with its name)
    GET    /api/files/{cap}/health    an audit of every shard now: health, each segment's healthy shards, hosters
    DELETE /api/files/{cap}           its shards are deleted from every hoster and the node forgets it
    GET    /api/hosting               this node as a hoster (what `avadios hosting --json` prints)

An upload is spooled to disk by the multipart parser and streamed to the storage service one segment at a
time; a download starts only once every hoster was probed and the first segment checked, so a wrong cap or a
file with too few hosters is a JSON error, never a truncated body.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from avadios import files
from avadios.errors import InvalidArgument
from avadios.v1 import storage_pb2
from avadios.v1.storage_nats import StorageClient


class FileOut(BaseModel):
    cap: str = Field(description="the read-cap: whoever holds it can read the file")
    verify_cap: str = Field(description="the verify-cap: checks the shards, cannot read the file")
    name: str
    size: int
    segments: int
    shards: int
    k: int
    n: int
    hosters: int
    hosters_alive: int
    health: str = Field(description="healthy, degraded or unreadable (by the last audit)")
    created_unix: int
    local_only: bool
    held_micro: int = Field(description="micro-AUTOM held for the hosters' current term")
    paid_micro: int = Field(description="micro-AUTOM paid to hosters so far, as their audits passed")

    @classmethod
    def of(cls, f: storage_pb2.FileInfo) -> FileOut:
        return cls(
            cap=f.cap, verify_cap=f.verify_cap, name=f.name, size=f.size, segments=f.segments, shards=f.shards,
            k=f.k, n=f.n, hosters=f.hosters, hosters_alive=f.hosters_alive, health=f.health,
            created_unix=f.created_unix, local_only=f.local_only, held_micro=f.held_micro, paid_micro=f.paid_micro,
        )  # fmt: skip


class FilesOut(BaseModel):
    files: list[FileOut]


class HosterAuditOut(BaseModel):
    node_id: str
    shards: int
    passed: int
    failed: int
    unreachable: int
    error: str


class HealthOut(BaseModel):
    cap: str
    health: str = Field(description="healthy, degraded or unreadable")
    healthy_per_segment: list[int]
    hosters: list[HosterAuditOut]
    file: FileOut


class HostingOut(BaseModel):
    quota_bytes: int
    used_bytes: int
    shards: int
    price_per_gib_month: int = Field(description="micro-AUTOM per GiB-month, as in this node's signed profile")
    audits_passed: int
    audits_failed: int
    shards_served: int
    refused_over_quota: int
    refused_bad_hash: int


class RemovedOut(BaseModel):
    removed: bool
    shards_deleted: int


def files_router(storage: StorageClient) -> APIRouter:
    router = APIRouter(tags=["files"])

    @router.get("/api/hosting", summary="This node as a hoster: shards held, bytes used, audits answered")
    async def hosting() -> HostingOut:
        h = await storage.Hosting(storage_pb2.HostingRequest())
        return HostingOut(
            quota_bytes=h.quota_bytes, used_bytes=h.used_bytes, shards=h.shards,
            price_per_gib_month=h.price_per_gib_month, audits_passed=h.audits_passed,
            audits_failed=h.audits_failed, shards_served=h.shards_served, refused_over_quota=h.refused_over_quota,
            refused_bad_hash=h.refused_bad_hash,
        )  # fmt: skip

    @router.get("/api/files", summary="This node's stored files")
    async def list_files() -> FilesOut:
        reply = await storage.ListFiles(storage_pb2.ListFilesRequest())
        return FilesOut(files=[FileOut.of(f) for f in reply.files])

    @router.post("/api/files", summary="Store a file: encrypted, erasure-coded, sharded over hosters")
    async def upload(
        file: UploadFile = File(description="the file's bytes"),  # noqa: B008 (FastAPI's way to declare a form part)
        k: int = Form(0, description="shards any segment is rebuilt from (0: the node's storage_k)"),
        n: int = Form(0, description="shards of each segment (0: the node's storage_n)"),
        local_only: bool = Form(False, description="keep every shard on this node"),
    ) -> FileOut:
        name = (file.filename or "").rsplit("/", 1)[-1]
        if not name:
            raise InvalidArgument("the multipart field 'file' needs a file name")
        info = await files.put_stream(
            storage, file.file, name, k=k, n=n, local_only=local_only, size_hint=file.size or 0
        )
        return FileOut.of(info)

    @router.get("/api/files/{cap}", summary="The file's bytes", response_class=StreamingResponse)
    async def download(cap: str) -> StreamingResponse:
        info, segments = await files.read_segments(storage, cap)  # errors (bad cap, hosters missing) come here

        disposition = f"attachment; filename*=UTF-8''{quote(info.name)}"
        return StreamingResponse(
            segments,
            media_type="application/octet-stream",
            headers={"Content-Disposition": disposition, "Content-Length": str(info.size)},
        )

    @router.get("/api/files/{cap}/health", summary="Audit every shard of the file now")
    async def health(cap: str) -> HealthOut:
        reply = await storage.CheckFile(storage_pb2.CheckFileRequest(cap=cap), timeout=120.0)
        return HealthOut(
            cap=cap,
            health=reply.health,
            healthy_per_segment=list(reply.healthy_per_segment),
            hosters=[
                HosterAuditOut(
                    node_id=h.node_id,
                    shards=h.shards,
                    passed=h.passed,
                    failed=h.failed,
                    unreachable=h.unreachable,
                    error=h.error,
                )
                for h in reply.hosters
            ],
            file=FileOut.of(reply.file),
        )

    @router.delete("/api/files/{cap}", summary="Remove the file from every hoster")
    async def remove(cap: str) -> RemovedOut:
        reply = await storage.RemoveFile(storage_pb2.RemoveFileRequest(cap=cap), timeout=120.0)
        return RemovedOut(removed=True, shards_deleted=reply.shards_deleted)

    return router
