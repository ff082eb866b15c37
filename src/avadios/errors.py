"""The error hierarchy every service raises, mapped once to gRPC status codes and HTTP statuses."""

from __future__ import annotations

import grpc


class AvadiosError(Exception):
    """An error a caller can act on; `code` says which kind, the message says why, and `reason`, where a domain
    names its errors (the ledger does), is a stable slug for scripts (HTTP sends it as the error's `code`)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str | None = None
    # When trying again may work, about how many seconds from now (HTTP `Retry-After`); None: no estimate.
    retry_after_s: float | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(AvadiosError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(AvadiosError):
    code = grpc.StatusCode.UNAUTHENTICATED


class NotFound(AvadiosError):
    code = grpc.StatusCode.NOT_FOUND


class Busy(AvadiosError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(AvadiosError):
    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(AvadiosError):
    """Something this node's setup cannot do at all (e.g. tokenize when inference forwards to another server)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class QueueFull(Busy):
    """A service's request queue is full (HTTP 429)."""

    reason = "queue_full"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueTimeout(Unavailable):
    """A queued request could not start before its wait deadline (HTTP 503 with Retry-After)."""

    reason = "queue_timeout"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(AvadiosError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class PayloadTooLarge(AvadiosError):
    """A message larger than the transport carries, or an upload over its limit; refused whole, never truncated."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    # Its reason travels with the status, so a refusal raised in another process (the voice service's upload
    # limit) is still told from a full queue, which shares the status code.
    reason = "request_too_large"


class RpcError(AvadiosError):
    """An error status received from a remote method."""

    def __init__(
        self, code: grpc.StatusCode, message: str, reason: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.ABORTED: 502,  # the network's providers did not agree on an answer
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class PaymentRequired(AvadiosError):
    """A network request that cannot be paid for: no provider within the price cap, or too little AUTOM to hold
    its price. Refused before any AUTOM moves (HTTP 402)."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# Reasons a network request's refusal carries when it cannot be paid for; the gateway's network tier turns a
# refusal with one of these back into PaymentRequired (a wallet's own send stays a plain 400).
PAYMENT_REASONS = frozenset({"no_provider", "insufficient_funds"})


def http_status(code: grpc.StatusCode) -> int:
    return _HTTP_STATUS.get(code, 500)


def http_status_of(exc: AvadiosError) -> int:
    """The HTTP status of an error: its code's, except that a message too large to carry is 413, not 429 (busy).
    A PayloadTooLarge raised in another process arrives as a RESOURCE_EXHAUSTED status that says "max payload"."""
    if isinstance(exc, PayloadTooLarge) or (
        exc.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        and (exc.reason == PayloadTooLarge.reason or "max payload" in exc.message)
    ):
        return 413
    if isinstance(exc, PaymentRequired):
        return 402
    return http_status(exc.code)


def status_code_from_value(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
