"""An AWS CLI (v1) plugin, loaded by the aws child process through the config file modelsync writes for it.

A started aws that waits: an `aws s3 cp` costs about 0.5 CPU-s before its first request, 0.3 of them importing the
CLI and botocore, which happens before plugins are loaded. modelsync's S3 uploader (s3_upload.py) starts the aws of
its next batch while the current batch goes up, with GO_ENV set: the CLI, imported, waits here for one line on
stdin. "go" runs the command (it lists the batch directory only then); anything else, or end of file (no next
batch came), ends the process at once with status 0, having sent nothing.

botocore sends `Expect: 100-continue` on every upload. Against MinIO its 100-continue handling races: about one
upload in two stalls for the whole read timeout (60 s by default) before a retry succeeds (boto/botocore#1833,
minio/minio#11245). Dropping the header after signing (it is not a signed header) removes the stall; it only
costs re-sending a body when a store rejects a request early, e.g. on a region redirect.

A download's memory and CPU: s3transfer reads each GET's body in chunks of `io_chunksize` (256 KiB by default) and
queues up to `max_io_queue_size` (default 1000) of them for the writer; the CLI has no setting for either. When the
consumer is slower than the network (a pipe into modelsync, a slow disk) the queue fills: `aws s3 cp` peaked at
~370 MiB RSS for 1 GiB. 2 MiB chunks cost about a quarter less CPU per GiB on 2 cores (bench/PIPELINE-STUDY.md),
and a queue of 4 of them keeps its bytes at 8 MiB (~110-145 MiB peak RSS, the 10 ranged GETs still parallel).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Protocol

IO_CHUNK = 2 << 20
IO_QUEUE = 4
# s3transfer prepares up to 5 transfers at once (max_submission_concurrency), so a `--recursive` download fetches
# the ranges of several files interleaved: the first file is complete only when parts of the next ones are on disk
# too. With 1, the files' ranges are queued file after file and the (10) parallel GETs finish them about in order,
# which lets modelsync's pipeline push a file while the next downloads, with about two files on disk.
SUBMISSION_CONCURRENCY = 1
# The parallel GETs of a download (the CLI's max_concurrent_requests, 10 by default) when modelsync's pipeline
# asks for fewer through this variable: they reach at most that many 8 MiB chunks past the file it waits for,
# which must fit in the room it keeps beside two files (64 MiB). 6 measured as fast as 10 here.
CONCURRENCY_ENV = "MODELSYNC_AWS_MAX_REQUESTS"
GO_ENV = "MODELSYNC_AWS_WAIT_FOR_GO"
GO = b"go\n"
DEFAULTS = {"io_chunksize": IO_CHUNK, "max_io_queue_size": IO_QUEUE,
            "max_submission_concurrency": SUBMISSION_CONCURRENCY}


class _Request(Protocol):
    """What drop_expect uses of botocore's AWSPreparedRequest."""

    @property
    def headers(self) -> MutableMapping[str, str]: ...


class _Cli(Protocol):
    """What awscli_initialize uses of the aws CLI's driver (its event emitter)."""

    def register(self, event_name: str, handler: Callable[..., None]) -> None: ...


def drop_expect(request: _Request, **kwargs: object) -> None:
    """A botocore before-send handler; boto3 clients made by modelsync register it too."""
    if "Expect" in request.headers:
        del request.headers["Expect"]


def transfer_defaults(defaults: Mapping[str, int] | None = None) -> None:
    """Make DEFAULTS the defaults of every s3transfer TransferConfig made in this process (the aws CLI builds its
    own from ~/.aws/config's s3 section, which cannot name these). Only the aws child calls it."""
    try:
        from s3transfer.manager import TransferConfig
    except ImportError:  # an aws CLI without s3transfer: nothing to set
        return
    init = TransferConfig.__init__
    if getattr(init, "_modelsync_defaults", None) is not None:
        return
    defaults = dict(DEFAULTS if defaults is None else defaults)
    try:
        limit = int(os.environ.get(CONCURRENCY_ENV) or 0)
    except ValueError:
        limit = 0

    # botocore's and s3transfer's objects are untyped (no annotations, no stubs): Any is what they are here
    def configured(self: Any, *args: Any, **kwargs: Any) -> None:
        for key, value in defaults.items():
            kwargs.setdefault(key, value)
        init(self, *args, **kwargs)
        if limit > 0:
            self.max_request_concurrency = min(self.max_request_concurrency, limit)

    configured.__dict__["_modelsync_defaults"] = defaults  # the mark that the patch is in (a function attribute)
    TransferConfig.__init__ = configured


def awscli_initialize(cli: _Cli) -> None:
    cli.register("before-send.s3", drop_expect)
    transfer_defaults()
    if os.environ.get(GO_ENV):
        wait_for_go(sys.stdin.buffer, os._exit)


def wait_for_go(stdin: Any, leave: Callable[[int], object]) -> None:
    """Return on "go"; else leave(0) (os._exit in the CLI: nothing of the CLI runs, nothing is sent)."""
    if stdin.readline() != GO:
        leave(0)
