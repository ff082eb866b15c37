"""Why a provider's result or a scorer's report is refused at the door: one exception per reason, with its status."""

from __future__ import annotations

import grpc

from avadios.errors import AvadiosError


class Refused(AvadiosError):
    """A result or report that must not be used. `reason` is a stable slug; the message says why to a person."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "refused"


class Malformed(Refused):
    """A field of the wrong size or shape, or a message over the limits."""

    reason = "malformed"


class BadSignature(Refused):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "bad_signature"


class WrongRequest(Refused):
    """For another request, another model or another result than the one it claims to answer."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "wrong_request"


class NotChosen(Refused):
    """Signed by a node that was not asked (a provider that was not chosen, a scorer that may not score)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "not_chosen"
