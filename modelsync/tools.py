"""The only place that runs external binaries (aws, oras, skopeo), through `sh`.

Rules kept here so no caller has to remember them:
- secrets go in through env or files, never argv: `run` refuses an argv that holds a known secret;
- stderr is streamed to the log line by line (masked) and its tail ends up in the ToolError;
- the child gets a minimal environment plus what the caller passes, so no stray AWS_* or DOCKER_CONFIG of the
  operator's shell changes what the job does.

`run` waits for one child. A `Group` runs children from several threads (the S3 -> OCI pipeline): a child's
stdout can be read as a byte stream, and `Group.stop()` ends every child still running, from any thread, so one
failing part (or SIGTERM in the main thread) stops the others within seconds.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TypeVar

import sh

from .errors import ToolError
from .secret import mask

log = logging.getLogger("modelsync.tools")

# Variables a child process legitimately needs from our environment; everything else must be passed explicitly.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "NO_PROXY", "no_proxy",
              "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
_STDERR_TAIL = 20
RETRY_ATTEMPTS = 4     # tries in all of a tool run whose failure is transient: waits 2, 4, 8 s between them
RETRY_FIRST_WAIT = 2.0
T = TypeVar("T")


def which(binary: str) -> str:
    """Absolute path of binary, or a ToolError saying how to get it."""
    path = shutil.which(binary)
    if not path:
        raise ToolError(f"'{binary}' is not on PATH: install it (the container image ships it; "
                        f"locally run e2e/install-tools.sh)")
    return path


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.update(extra or {})
    return env


def _refuse_secrets_in_argv(binary: str, args: Sequence[str]) -> None:
    for arg in args:
        if mask(arg) != arg:
            # A programming error, but never let it reach the process table; the message names no value.
            raise ToolError(f"refusing to run {binary}: a secret would appear in its command line")


def run(binary: str, args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
        timeout: float | None = None, on_stderr: Callable[[str], None] | None = None,
        on_stdout: Callable[[str], None] | None = None) -> str:
    """Run binary with args; return its stdout. Raise ToolError with the masked stderr tail on failure.

    on_stdout, when given, also sees each stdout line as it comes (e.g. a tool's per-blob progress lines).
    """
    path = which(binary)
    args = [str(a) for a in args]
    _refuse_secrets_in_argv(binary, args)
    tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)

    def stderr_line(line: str) -> None:
        line = mask(line.rstrip("\n"))
        if not line:
            return
        tail.append(line)
        if on_stderr:
            on_stderr(line)
        else:
            log.debug("%s: %s", binary, line)

    log.debug("running %s %s", binary, " ".join(args))
    stdout: list[str] = []

    def stdout_line(line: str) -> None:
        stdout.append(line)
        if on_stdout:
            on_stdout(mask(line.rstrip("\n")))

    proc = sh.Command(path)(*args, _env=child_env(env), _cwd=cwd, _err=stderr_line, _err_bufsize=1,
                            _out=stdout_line, _out_bufsize=1, _tty_out=False, _bg=True, _bg_exc=False)
    try:
        proc.wait(timeout=timeout)
    except sh.ErrorReturnCode as exc:
        detail = " | ".join(tail) or mask("".join(stdout).strip())[-500:] or "no output"
        raise ToolError(f"{_what(binary, args)} failed (exit {exc.exit_code}): {detail}") from None
    except sh.TimeoutException:
        _stop(proc)
        raise ToolError(f"{_what(binary, args)} did not finish within {timeout:g}s") from None
    except BaseException:  # interrupted (SIGTERM, Ctrl-C): the child must not go on writing behind our back
        _stop(proc)
        raise
    return "".join(stdout)


def retry(what: str, attempt: Callable[[], T], transient: Callable[[ToolError], bool],
          wait: Callable[[float], object] = time.sleep) -> T:
    """attempt() until it succeeds, at most RETRY_ATTEMPTS times while its ToolError is transient (a network cut,
    a server restarting or busy: the caller's tool knows which texts say so). Anything else is raised at once.
    `wait` sleeps between tries: a pipeline passes one that returns early when it is being stopped (its next
    spawn then fails for good)."""
    delay = RETRY_FIRST_WAIT
    for number in range(1, RETRY_ATTEMPTS + 1):
        try:
            return attempt()
        except ToolError as exc:
            if number == RETRY_ATTEMPTS or not transient(exc):
                if number > 1:
                    raise ToolError(f"{exc} (gave up after {number} tries)") from None
                raise
            log.warning("%s: %s; trying again in %.0fs (%d of %d tries made)", what, exc, delay, number,
                        RETRY_ATTEMPTS)
            wait(delay)
            delay *= 2
    raise AssertionError("unreachable")


class Child:
    """One running binary of a Group: stderr logged (masked) line by line with its tail kept for the error; stdout
    either readable as a byte stream (`stdout`) or drained and kept (`output()`)."""

    def __init__(self, binary: str, args: list[str], proc: subprocess.Popen, stream: bool):
        self.binary, self.args, self.proc = binary, args, proc
        self.paused = False
        self._state = threading.Lock()
        self.tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self._out: list[bytes] = []
        self.stdout: IO[bytes] | None = proc.stdout if stream else None
        self._threads = [threading.Thread(target=self._read_stderr, name=f"{binary}-stderr", daemon=True)]
        if not stream:
            self._threads.append(threading.Thread(target=self._drain_stdout, name=f"{binary}-stdout", daemon=True))
        for thread in self._threads:
            thread.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = mask(raw.decode("utf-8", "replace").rstrip("\n"))
            if line:
                self.tail.append(line)
                log.debug("%s: %s", self.binary, line)

    def _drain_stdout(self) -> None:
        assert self.proc.stdout is not None
        while data := self.proc.stdout.read(65536):
            if sum(map(len, self._out)) < 1 << 20:  # a tool's report, never bulk data: keep the first MiB
                self._out.append(data)

    def output(self) -> str:
        return b"".join(self._out).decode("utf-8", "replace")

    def wait(self, timeout: float | None = None, stall: float | None = None) -> None:
        """Wait for the exit; ToolError (masked stderr tail) unless it is 0. With stall, a child that reads and
        writes nothing at all (files, sockets, pipes: /proc/PID/io) for that many seconds is stopped: a tool
        without timeouts of its own (oras) would otherwise wait forever on a connection that went silent."""
        try:
            code = self.proc.wait(timeout) if stall is None else self._wait_moving(timeout, stall)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ToolError(f"{_what(self.binary, self.args)} did not finish within {timeout:g}s") from None
        for thread in self._threads:
            thread.join(5)
        if code != 0:
            detail = " | ".join(self.tail) or mask(self.output().strip())[-500:] or "no output"
            raise ToolError(f"{_what(self.binary, self.args)} failed (exit {code}): {detail}")

    def _wait_moving(self, timeout: float | None, stall: float) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        seen, since = _io_bytes(self.proc.pid), time.monotonic()
        while True:
            try:
                return self.proc.wait(min(1.0, stall))
            except subprocess.TimeoutExpired:
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    raise
                count = _io_bytes(self.proc.pid)
                if count is None or count != seen:  # unknown (no /proc): never called stalled
                    seen, since = count, now
                elif now - since > stall:
                    self.stop()
                    raise ToolError(f"{_what(self.binary, self.args)} made no progress for {stall:g}s (nothing read "
                                    f"or written: a stalled connection?)") from None

    def pause(self) -> None:
        """SIGSTOP the child (back-pressure: it reads and writes nothing until resume; TCP flow control holds
        its servers meanwhile). Idempotent; nothing if it has ended."""
        self._signal(signal.SIGSTOP, paused=True)

    def resume(self) -> None:
        self._signal(signal.SIGCONT, paused=False)

    def _signal(self, sig: int, paused: bool) -> None:
        with self._state:
            if self.paused != paused and self.proc.poll() is None:
                try:
                    os.kill(self.proc.pid, sig)
                except ProcessLookupError:
                    pass
                self.paused = paused

    def stop(self) -> None:
        """Terminate (then kill) the child if it still runs, and reap it (a paused child is resumed to die)."""
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.resume()
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            except OSError:
                pass

    def close(self) -> None:
        """After stop or wait: the reader threads end (the pipes are at EOF), then the pipes are closed."""
        for thread in self._threads:
            thread.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):  # stdin (a pipe) is its writer's to close
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class Group:
    """Children started from several threads, all stopped at once by `stop()` (idempotent, any thread); once
    stopped the group starts nothing more (`spawn` raises ToolError)."""

    def __init__(self) -> None:
        self._children: set[Child] = set()
        self._lock = threading.Lock()
        self.stopped = False

    def spawn(self, binary: str, args: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: str | None = None, stream: bool = False, stdin: bool = False) -> Child:
        """Start binary; with stream=True its stdout is left for the caller to read (child.stdout), with stdin=True
        its stdin is a pipe for the caller to write (child.proc.stdin, unbuffered)."""
        path = which(binary)
        args = [str(a) for a in args]
        _refuse_secrets_in_argv(binary, args)
        log.debug("running %s %s", binary, " ".join(args))
        with self._lock:
            if self.stopped:
                raise ToolError(f"{_what(binary, args)}: not started, the transfer is being stopped")
            proc = subprocess.Popen([path, *args], env=child_env(env), cwd=cwd,
                                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, close_fds=True)
            if stream:
                _widen_pipe(proc.stdout)
            if stdin:
                _widen_pipe(proc.stdin)
            child = Child(binary, args, proc, stream)
            self._children.add(child)
        return child

    def run(self, binary: str, args: Sequence[str], *, env: Mapping[str, str] | None = None,
            timeout: float | None = None, stall: float | None = None) -> str:
        """Like tools.run, but stoppable by the group: its stdout, ToolError on failure (see Child.wait: stall)."""
        child = self.spawn(binary, args, env=env)
        try:
            child.wait(timeout, stall)
            return child.output()
        finally:
            self.finish(child)

    def finish(self, child: Child) -> None:
        """Stop (if still running), close and forget a child."""
        child.stop()
        child.close()
        with self._lock:
            self._children.discard(child)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            children = list(self._children)
        for child in children:
            child.stop()


def _io_bytes(pid: int) -> int | None:
    """Bytes a process has read and written so far, by any means (Linux /proc/PID/io), or None."""
    try:
        fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/io").read().splitlines() if ":" in line)
        return int(fields["rchar"]) + int(fields["wchar"])
    except (OSError, KeyError, ValueError):
        return None


def _widen_pipe(pipe: IO[bytes] | None, size: int = 1 << 20) -> None:
    """A 1 MiB pipe instead of 64 KiB for a bulk stream: fewer wake-ups on both sides (Linux; else left as is)."""
    try:
        import fcntl
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, size)  # type: ignore[union-attr, attr-defined]
    except (AttributeError, OSError, ValueError):
        pass


def _stop(proc: sh.RunningCommand) -> None:
    try:
        if proc.is_alive():
            proc.terminate()
            proc.wait(timeout=10)
    except Exception:  # already gone, or ignoring SIGTERM: make sure
        try:
            proc.kill()
        except Exception:
            pass


def _what(binary: str, args: Sequence[str]) -> str:
    """'aws s3 cp' for error messages: the binary and its sub-command words, options and paths left out."""
    words: list[str] = []
    for a in args:
        if a.startswith("-") or "/" in a or len(words) == 2:
            break
        words.append(a)
    return " ".join([binary, *words])
