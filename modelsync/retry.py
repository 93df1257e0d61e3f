"""The one retry policy of modelsync: how often, how long between tries, and which failures are worth another.

Every client that talks to a network service retries through `Policy.call` (the registry HTTP client
`distribution`, the Model Registry client `mr_api`, the Hugging Face download `sources.hf`, and the external tools
through `tools.retry`), so they agree on:

- which failures are transient: a connection refused, reset or cut, a timeout, and HTTP 408, 429, 500, 502, 503,
  504 (`TRANSIENT_STATUSES`). Anything else (401/403, 404, a 4xx that says the request is wrong, an untrusted
  certificate) is raised at once: another try cannot change the answer;
- the waits: `first_delay` doubling after each try, at most `max_delay`, each drawn at random from the upper
  `jitter` fraction of that (so many pods that failed together do not come back together, and the documented
  figure stays the worst case);
- `Retry-After` on a 429 or 503, in seconds or as an HTTP date, waited instead of the back-off, at most
  `max_retry_after` (a server cannot park the job for an hour);
- one log line per retry (WARNING, on the client's logger, the reason masked), and after the last try the
  client's own error saying how many tries were made.

A client raises `Transient` from one try to say "worth another" (the classifier of `call` may also turn a
library's exception into one). The figures differ per client only where a measured reason says so; each one is
named where it is defined:

    client              tries  waits (before jitter)    per-try timeout  why
    distribution        4      1, 2, 4 s                60 s            `DEFAULT`
    mr_api              4      0.5, 1, 2 s (cap 4)      30 s            a stalled Model Registry fails the job
                                                                         within tests/test_faults' bound
    tools (aws, oras)   4      2, 4, 8 s                the tool's      a retry restarts a whole tool run; an
                                                                         8 s flapping link must be ridden out
    sources.hf          3      2, 4 s                   the Hub client  a retry restarts the snapshot download
    ranged reads        5      2, 4, 8, 16 s            the client's    `RANGES`: s3_download and blob_read; a
                                                                         cut range resumes from its byte, so
                                                                         about 30 s of waits cost nothing
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .secret import mask

log = logging.getLogger("modelsync.retry")

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})  # timeout, busy, a server or gateway failing
RETRY_AFTER_STATUSES = frozenset({429, 503})                    # where a Retry-After header is honoured
T = TypeVar("T")


class Transient(Exception):
    """One try failed in a way another try may not: the one-line reason, and the server's Retry-After (seconds)
    when it gave one."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for (an integer, or an HTTP date); None when absent or unreadable."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def http_status(status: int, reason: str, retry_after_header: str | None = None) -> Transient | None:
    """The Transient for an HTTP answer worth another try (with its Retry-After header's wait on 429/503), else
    None."""
    if status not in TRANSIENT_STATUSES:
        return None
    return Transient(reason, retry_after(retry_after_header) if status in RETRY_AFTER_STATUSES else None)


def _as_transient(exc: BaseException) -> Transient | None:
    return exc if isinstance(exc, Transient) else None


@dataclass(frozen=True)
class Policy:
    """Bounded retries: `attempts` tries in all, waits of `first_delay` doubling up to `max_delay` (the upper
    `jitter` fraction of each drawn at random), a server's Retry-After honoured up to `max_retry_after`. `timeout`
    is what one try of an HTTP request may take (clients that time their tries pass it to their transport)."""

    attempts: int = 4
    first_delay: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.25
    max_retry_after: float = 60.0
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay < 0 or self.max_delay < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid retry policy {self}")

    def backoff(self, tries_made: int) -> float:
        """The wait (before jitter) after tries_made failed tries."""
        return float(min(self.max_delay, self.first_delay * 2 ** (tries_made - 1)))

    def delay(self, tries_made: int, server_asks: float | None = None) -> float:
        """The wait after tries_made failed tries: the server's Retry-After when given (capped), else the
        back-off with jitter."""
        if server_asks is not None:
            return min(max(0.0, server_asks), self.max_retry_after)
        base = self.backoff(tries_made)
        return base * (1 - self.jitter * random.random())

    def call(self, what: str, attempt: Callable[[], T], *,
             transient: Callable[[BaseException], Transient | None] = _as_transient,
             give_up: Callable[[BaseException, int], BaseException] | None = None,
             wait: Callable[[float], object] = time.sleep, logger: logging.Logger = log) -> T:
        """attempt() until it returns, at most `attempts` times while what it raises is transient (`transient`
        maps an exception to a Transient, or None for one to raise at once). After the last try the exception
        goes up as give_up(exc, tries) makes it (else as it is). `wait` sleeps between tries (a pipeline passes
        one that returns early when it is being stopped). Each retry is logged once, masked, naming `what`."""
        for number in range(1, self.attempts + 1):
            try:
                return attempt()
            except Exception as exc:
                why = transient(exc)
                if why is None:
                    raise
                if number == self.attempts:
                    if give_up is not None:
                        raise give_up(exc, number) from None
                    raise
                pause = self.delay(number, why.retry_after)
                said = " (as the server asked)" if why.retry_after is not None else ""
                logger.warning("%s: %s; trying again in %.1fs%s (try %d of %d)", what, mask(why.reason), pause,
                               said, number + 1, self.attempts)
                wait(pause)
        raise AssertionError("unreachable")


DEFAULT = Policy()
RANGES = Policy(attempts=5, first_delay=2.0)
