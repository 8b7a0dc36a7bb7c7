"""Injected faults, so that a worker's reliability is proven against the real engine.

``cpworker local --faults 'throttle=0.3,5xx=0.1,reset=0.05,lost=0.02,ops=A|B,seed=7'``
or ``LocalCodePipeline(faults=FaultSettings(...))``. Each CodePipeline request and
each signed S3 request draws once; the probabilities are of disjoint outcomes::

    throttle  CodePipeline: 400 ThrottlingException; S3: 503 SlowDown
    5xx       CodePipeline: 500 InternalFailure or 503 ServiceUnavailable (half each);
              S3: 500 InternalError or 503 ServiceUnavailable
    reset     the connection is reset (TCP RST) before the request is processed:
              nothing happened, a retry is safe
    lost      the request is processed, then the connection is reset instead of the
              answer: it happened but the client cannot know (a retried
              PutJobSuccessResult then meets InvalidJobStateException)

Every fault but ``lost`` is decided and answered before the engine or moto sees the
request. ``ops`` limits faults to the named operations: CodePipeline operation names,
the S3 names in :data:`S3_OPERATIONS`, or ``S3`` for every S3 request. With ``seed``
the same sequence of requests meets the same sequence of faults.

``latency=0.02`` holds each of those requests (within ``ops``) that many seconds before
it is answered, faulted or not, as the network and the service of a real region would:
a client that waits for each call in turn is then measured as it would run against AWS
rather than against a server on the same machine. cpworker's own
``CpworkerLocal.*`` operations, the engine's own S3/KMS/STS calls and every other
service are never faulted.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cpworker.local.validation import service_model
from cpworker.local.wire import Answer, json_error, s3_error

__all__ = [
    "S3",
    "S3_OPERATIONS",
    "ConnectionDropped",
    "Fault",
    "FaultInjector",
    "FaultSettings",
    "s3_operation",
]

S3 = "S3"
"""In ``ops``: every S3 request, whatever its operation."""

S3_OPERATIONS = frozenset(
    {
        *("GetObject", "HeadObject", "PutObject", "CopyObject", "DeleteObject", "DeleteObjects"),
        *("CreateMultipartUpload", "UploadPart", "UploadPartCopy", "CompleteMultipartUpload"),
        *("AbortMultipartUpload", "ListParts", "ListBuckets", "ListObjects", "ListObjectsV2"),
        *("HeadBucket", "CreateBucket", "DeleteBucket"),
    }
)
"""The S3 operations told apart (coarsely, by method, path and query); others are ``S3``."""

_KEYS = {"throttle": "throttle", "5xx": "server_error", "reset": "reset", "lost": "lost"}
MAX_LATENCY_S = 60.0


class Fault(Enum):
    THROTTLE = "throttle"
    INTERNAL_ERROR = "500"
    UNAVAILABLE = "503"
    RESET = "reset"
    LOST = "lost"

    def answer(self, *, s3: bool, head: bool) -> Answer:
        """The error answer of a throttle or 5xx fault, in the service's wire form."""
        if s3:
            status, code, message = _S3_ANSWERS[self]
            return s3_error(status, code, message, head=head)
        status, code, message = _CODEPIPELINE_ANSWERS[self]
        return json_error(status, code, message)


_CODEPIPELINE_ANSWERS = {
    Fault.THROTTLE: (400, "ThrottlingException", "Rate exceeded"),
    Fault.INTERNAL_ERROR: (
        500,
        "InternalFailure",
        "The request processing has failed because of an unknown error, exception or failure.",
    ),
    Fault.UNAVAILABLE: (
        503,
        "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server.",
    ),
}
_S3_ANSWERS = {
    Fault.THROTTLE: (503, "SlowDown", "Please reduce your request rate."),
    Fault.INTERNAL_ERROR: (
        500,
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
    Fault.UNAVAILABLE: (503, "ServiceUnavailable", "Reduce your request rate."),
}


class ConnectionDropped(ConnectionResetError):  # noqa: N818 - an event, not an error
    """Raised by the application to reset the connection instead of answering."""


@dataclass(frozen=True)
class FaultSettings:
    """Probabilities of each injected fault (0 to 1, at most 1 together), which
    operations they hit (empty: all), and the seed of their random draws."""

    throttle: float = 0.0
    server_error: float = 0.0
    reset: float = 0.0
    lost: float = 0.0
    operations: frozenset[str] = field(default_factory=frozenset)
    seed: int | None = None
    latency: float = 0.0
    """Seconds each request waits before its answer."""

    def __post_init__(self) -> None:
        chances = (self.throttle, self.server_error, self.reset, self.lost)
        if not all(0.0 <= chance <= 1.0 for chance in chances):
            raise ValueError("fault probabilities must be between 0 and 1")
        if not 0.0 <= self.latency <= MAX_LATENCY_S:
            raise ValueError(f"latency must be between 0 and {MAX_LATENCY_S:g} seconds")
        if sum(chances) > 1.0 + 1e-9:
            raise ValueError("fault probabilities must add up to at most 1")
        unknown = set(self.operations) - _known_operations()
        if unknown:
            raise ValueError(
                f"unknown operation(s) {', '.join(sorted(unknown))}: name CodePipeline"
                f" operations, S3 operations ({', '.join(sorted(S3_OPERATIONS))}) or S3"
            )

    @classmethod
    def parse(cls, text: str) -> FaultSettings:
        """``throttle=0.3,5xx=0.1,reset=0.05,lost=0.02,ops=PollForJobs|GetObject,seed=7``
        (and ``latency=0.02``, in seconds)."""
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            name = name.strip()
            try:
                if not sep:
                    raise ValueError
                if name in _KEYS:
                    values[_KEYS[name]] = float(value)
                elif name == "ops":
                    values["operations"] = frozenset(op.strip() for op in value.split("|"))
                elif name == "seed":
                    values["seed"] = int(value)
                elif name == "latency":
                    values["latency"] = float(value)
                else:
                    raise KeyError(name)
            except KeyError:
                known = ", ".join([*_KEYS, "ops", "seed", "latency"])
                raise ValueError(f"{name!r} is not a fault setting ({known})") from None
            except ValueError:
                raise ValueError(f"{item!r}: expected {name or 'name'}=value") from None
        return cls(**values)


def _known_operations() -> set[str]:
    return {*service_model().operation_names, *S3_OPERATIONS, S3}


class FaultInjector:
    """Draws the fault, if any, of each request, from one seeded random stream."""

    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self._random = random.Random(settings.seed)  # noqa: S311 - chaos, not security
        self._lock = threading.Lock()
        bands: list[tuple[float, Fault]] = []
        upper = 0.0
        for fault, chance in (
            (Fault.THROTTLE, settings.throttle),
            (Fault.INTERNAL_ERROR, settings.server_error / 2),
            (Fault.UNAVAILABLE, settings.server_error / 2),
            (Fault.RESET, settings.reset),
            (Fault.LOST, settings.lost),
        ):
            if chance > 0:
                upper += chance
                bands.append((upper, fault))
        self._bands = tuple(bands)

    def codepipeline(self, operation: str) -> Fault | None:
        """The fault of one CodePipeline request, once its latency has passed."""
        operations = self.settings.operations
        if operations and operation not in operations:
            return None
        return self._draw()

    def s3(self, environ: dict[str, Any]) -> Fault | None:
        """The fault of one S3 request, once its latency has passed."""
        operations = self.settings.operations
        if operations and S3 not in operations and s3_operation(environ) not in operations:
            return None
        return self._draw()

    def _draw(self) -> Fault | None:
        if self.settings.latency:
            time.sleep(self.settings.latency)  # the server answers each request on its own thread
        with self._lock:
            draw = self._random.random()
        for upper, fault in self._bands:
            if draw < upper:
                return fault
        return None


def s3_operation(environ: dict[str, Any]) -> str:
    """The S3 operation of a request, told from its method, path and query; else ``S3``."""
    method: str = environ.get("REQUEST_METHOD", "")
    path: str = environ.get("PATH_INFO", "")
    names = (p.partition("=")[0] for p in environ.get("QUERY_STRING", "").split("&") if p)
    query = {n for n in names if not n.lower().startswith("x-amz-")}  # presigned URLs' own
    copy = "HTTP_X_AMZ_COPY_SOURCE" in environ
    host: str = environ.get("HTTP_HOST", "")
    if host.partition(":")[0].endswith(".localhost"):  # virtual-hosted: the bucket is in the host
        has_bucket, has_key = True, path.strip("/") != ""
    else:
        bucket, _, key = path.lstrip("/").partition("/")
        has_bucket, has_key = bucket != "", key != ""
    if has_key:
        if "uploadId" in query:
            multipart = {
                "PUT": "UploadPartCopy" if copy else "UploadPart",
                "POST": "CompleteMultipartUpload",
                "DELETE": "AbortMultipartUpload",
                "GET": "ListParts",
            }
            return multipart.get(method, S3)
        if query - {"versionId", "partNumber"} - _RESPONSE_OVERRIDES:
            return "CreateMultipartUpload" if method == "POST" and query == {"uploads"} else S3
        plain = {
            "GET": "GetObject",
            "HEAD": "HeadObject",
            "PUT": "CopyObject" if copy else "PutObject",
            "DELETE": "DeleteObject",
        }
        return plain.get(method, S3)
    if not has_bucket:
        return "ListBuckets" if method == "GET" else S3
    if method == "POST" and query == {"delete"}:
        return "DeleteObjects"
    if method == "GET" and query <= _LIST_PARAMETERS:
        return "ListObjectsV2" if "list-type" in query else "ListObjects"
    if query:
        return S3
    return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(method, S3)


_RESPONSE_OVERRIDES = frozenset(
    {
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
    }
)
_LIST_PARAMETERS = frozenset(
    {
        *("list-type", "prefix", "delimiter", "marker", "max-keys", "encoding-type"),
        *("continuation-token", "fetch-owner", "start-after"),
    }
)
