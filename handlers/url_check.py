"""Check that a web page answers 200 and shows the text it should.

The User Guide's first Lambda invoke sample, done right: the URL is validated
before anything is fetched, the fetch has a timeout and reads a bounded number
of bytes, and every outcome is a clear, typed result that cpworker reports (the
guide's sample hangs the pipeline when its report fails).

UserParameters is either the URL itself::

    https://example.com/health

or a JSON object::

    {"url": "https://example.com/", "expect": "Welcome", "timeoutSeconds": 10}

As a custom action (``cpworker serve handlers.url_check:app``) the same fields
are configuration properties. Deploy it as a Lambda function with
``handler = handlers.url_check.handler`` (see ``sam/template.yaml``).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from http import HTTPStatus
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, BaseModel, Field, field_validator

from cpworker import ActionApp, Failure, Job, JobFailed, Result, Success, lambda_handler

MAX_BODY_BYTES = 1024 * 1024  # only the first MiB of a page is searched
MAX_TIMEOUT_SECONDS = 300.0
USER_AGENT = "cpworker-url-check/1"


class UrlCheckConfig(BaseModel):
    url: str = Field(
        validation_alias=AliasChoices("url", "UserParameters"),
        description="The http:// or https:// URL to fetch.",
    )
    expect: str = Field("", description="Text the page must contain (default: any page).")
    timeoutSeconds: float = Field(
        10.0, gt=0, le=MAX_TIMEOUT_SECONDS, description="Longest the request may take."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials (user:password@)")
        return parts.geturl()


app = ActionApp()


@app.action(
    category="Test",
    provider="CpworkerUrlCheck",
    version="1",
    config=UrlCheckConfig,
    inputs=(0, 0),
    outputs=(0, 0),
)
def url_check(job: Job[UrlCheckConfig]) -> Result:
    """Fetch the page once; succeed on 200 with the expected text, fail otherwise."""
    config = job.config
    shown = _shown(config.url)
    timeout = min(config.timeoutSeconds, max(job.remaining(), 1.0))
    page = _fetch(config.url, shown, timeout)
    job.log.info("page fetched", extra={"url": shown, "status": page.status})
    if page.status != HTTPStatus.OK:
        return Failure(f"{shown} answered HTTP {page.status}, expected 200")
    if config.expect and config.expect not in page.text:
        searched = f" (searched its first {MAX_BODY_BYTES} bytes)" if page.truncated else ""
        return Failure(f"expected text {config.expect!r} not found in {shown}{searched}")
    found = f" and contains {config.expect!r}" if config.expect else ""
    return Success(summary=f"{shown} answered 200{found}")


class Page(NamedTuple):
    status: int
    text: str
    truncated: bool


def _fetch(url: str, shown: str, timeout: float) -> Page:
    """One GET; an error status is an answer (a failed check), not having one is a fault."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            data = response.read(MAX_BODY_BYTES + 1)
            charset = response.headers.get_content_charset() or "utf-8"
            return Page(
                int(response.status),
                _decode(data[:MAX_BODY_BYTES], charset),
                len(data) > MAX_BODY_BYTES,
            )
    except urllib.error.HTTPError as exc:
        exc.close()
        return Page(exc.code, "", truncated=False)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise JobFailed(f"{shown} did not answer within {timeout:g} s") from None
        raise JobFailed(f"could not reach {shown}: {exc.reason}") from None
    except TimeoutError:
        raise JobFailed(f"{shown} did not answer within {timeout:g} s") from None
    except (OSError, ValueError) as exc:
        raise JobFailed(f"could not fetch {shown}: {exc}") from None


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know: read it as UTF-8
        return data.decode("utf-8", errors="replace")


def _shown(url: str) -> str:
    """The URL without its query and fragment, which may carry tokens: safe for messages."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


handler = lambda_handler(app)
