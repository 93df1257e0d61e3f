"""The only door through which modelsync runs a child process (aws, oras, skopeo, the job itself for
modelsync-from-pod): every child is started through `sh`, the same way, here.

Rules kept here so no caller has to remember them:
- secrets go in through env or files, never argv: a child whose argv holds a known secret is refused;
- stderr is read line by line (masked): logged at DEBUG (or given to the caller's on_stderr), its last lines kept
  for the ToolError; stdout, unless the caller streams it, is read the same way and kept (on_stdout sees each line);
- the child gets a minimal environment plus what the caller passes, so no stray AWS_* or DOCKER_CONFIG of the
  operator's shell changes what the job does (`run_attached` alone is given a whole environment by its caller);
- one path for the end of a child (`Child.wait`): a non-zero exit, a timeout, or (with `stall`) a child that reads
  and writes nothing for that long becomes a ToolError naming the tool and the masked stderr tail; a timed-out,
  stalled or interrupted child is stopped (SIGTERM, SIGKILL after 5 s) and reaped.

`run` starts one child and waits for it. A `Group` starts children from several threads (the S3 -> OCI pipeline):
a child's stdout can be a raw byte stream (`stream=True`: an OS pipe of 1 MiB handed to the child by `sh` as its
fd 1, read by the caller without any copy through Python threads), its stdin a pipe the caller writes
(`stdin=True`), it can be paused and resumed (SIGSTOP/SIGCONT: back-pressure), and `Group.stop()` ends every child
still running, from any thread, so one failing part (or SIGTERM in the main thread) stops the others within
seconds. The end of a child is awaited on a pidfd (Linux >= 5.3; else a 50 ms poll), because `sh`'s own
wait(timeout) polls every 100 ms and a pipeline waits for tens of children.

Retries of a whole tool run (`retry`) follow retry.py's policy, with `POLICY`'s figures.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, TypeVar

import sh

from .errors import ToolError
from .retry import Policy, Transient
from .secret import mask

log = logging.getLogger("modelsync.tools")

# Variables a child process legitimately needs from our environment; everything else must be passed explicitly.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "NO_PROXY", "no_proxy",
              "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
_STDERR_TAIL = 20
_KEEP_STDOUT = 16 << 20  # a tool's report (a manifest, a listing), never bulk data: that is streamed
_STOP_WAIT = 5.0
# retry.py's policy for whole tool runs: 4 tries, waits 2, 4, 8 s. Longer than retry.DEFAULT's 1, 2, 4 s: a retry
# restarts the tool's whole transfer, and an 8 s flapping link must be ridden out (tests/test_faults.py).
POLICY = Policy(attempts=4, first_delay=2.0)
_SPAWN = threading.Lock()  # one fork at a time: sh forks in Python and toggles the garbage collector around it
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

    on_stdout, when given, also sees each stdout line (masked) as it comes (e.g. a tool's per-blob progress lines).
    """
    child = start(binary, args, env=env, cwd=cwd, on_stderr=on_stderr, on_stdout=on_stdout)
    try:
        child.wait(timeout)
        return child.output()
    finally:
        child.stop()
        child.close()


def run_attached(binary: str, args: Sequence[str], *, env: Mapping[str, str]) -> int:
    """Run binary on our own stdin, stdout and stderr (the operator's terminal) with exactly env (no minimal
    environment: the caller gives the whole of it) and return its exit status; interrupted (Ctrl-C), it is
    stopped like any child. Its argv is checked for secrets like any other; its output is its own to mask."""
    child = start(binary, args, env=env, attached=True)
    try:
        return child.status()
    finally:
        child.stop()
        child.close()


def retry(what: str, attempt: Callable[[], T], transient: Callable[[ToolError], bool],
          wait: Callable[[float], object] = time.sleep) -> T:
    """attempt() under POLICY (retry.py) while its ToolError is transient (a network cut, a server restarting or
    busy: the caller's tool knows which texts say so). Anything else is raised at once. `wait` sleeps between tries:
    a pipeline passes one that returns early when it is being stopped (its next spawn then fails for good)."""
    def classify(exc: BaseException) -> Transient | None:
        return Transient(str(exc)) if isinstance(exc, ToolError) and transient(exc) else None

    return POLICY.call(what, attempt, transient=classify, wait=wait, logger=log,
                       give_up=lambda exc, tries: ToolError(f"{exc} (gave up after {tries} tries)"))


def start(binary: str, args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
          stream: bool = False, stdin: bool = False, attached: bool = False,
          on_stderr: Callable[[str], None] | None = None, on_stdout: Callable[[str], None] | None = None) -> Child:
    """Start binary (the one place a child is started). stream: its stdout is left for the caller to read as bytes
    (child.stdout); stdin: its stdin is a pipe for the caller to write (child.stdin, unbuffered; the writer closes
    it); attached: stdin, stdout and stderr are ours and env is used as it is. Else stdin is /dev/null and env is
    child_env(env)."""
    path = which(binary)
    argv = [str(a) for a in args]
    _refuse_secrets_in_argv(binary, argv)
    log.debug("running %s %s", binary, " ".join(argv))
    return Child(binary, argv, path, dict(env or {}) if attached else child_env(env), cwd, stream=stream,
                 stdin=stdin, attached=attached, on_stderr=on_stderr, on_stdout=on_stdout)


class Child:
    """One running binary, started by `start` through sh. `stdout` (stream=True) is a raw byte stream, `stdin`
    (stdin=True) a raw pipe; `pid` and `poll()` as a Popen has them (`proc` is the child itself, for callers written
    against Popen); `wait`, `pause`/`resume`, `stop`, `close` as documented on each."""

    def __init__(self, binary: str, args: list[str], path: str, env: dict[str, str], cwd: str | None, *,
                 stream: bool, stdin: bool, attached: bool, on_stderr: Callable[[str], None] | None,
                 on_stdout: Callable[[str], None] | None):
        self.binary, self.args = binary, args
        self.paused = False
        self._state = threading.Lock()
        self.tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self._on_stderr, self._on_stdout = on_stderr, on_stdout
        self._out: list[str] = []
        self._kept = 0
        self._overflow = False
        self.stdout: IO[bytes] | None = None
        self.stdin: IO[bytes] | None = None
        theirs: list[int] = []  # the child's ends of its pipes: sh dups them into the child, then they are closed
        io: dict[str, Any]
        try:
            if attached:
                io = {"_in": 0, "_out": 1, "_err": 2}
            else:
                io = {"_err": self._stderr_line, "_err_bufsize": 1}
                if stdin:
                    self.stdin, io["_in"] = _pipe("wb")
                else:
                    io["_in"] = os.open(os.devnull, os.O_RDONLY)
                theirs.append(io["_in"])
                if stream:
                    self.stdout, io["_out"] = _pipe("rb")
                    theirs.append(io["_out"])
                else:
                    io.update(_out=self._stdout_line, _out_bufsize=1)
            with _SPAWN:
                self._cmd = sh.Command(path)(*args, _env=env, _cwd=cwd, _bg=True, _bg_exc=False, _tty_out=False,
                                             _decode_errors="replace", **io)
        except (sh.ForkException, OSError) as exc:
            self.close(stdin_too=True)
            raise ToolError(f"{_what(binary, args)} could not be started: {mask(str(exc).strip())[:300]}") from None
        finally:
            for fd in theirs:
                os.close(fd)
        self.pid: int = self._cmd.pid
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel), or already ended and reaped: poll instead
            pass

    @property
    def proc(self) -> Child:
        return self

    # ---- output ------------------------------------------------------------------------------------------------

    def _stderr_line(self, line: str) -> None:
        line = mask(line.rstrip("\n"))
        if not line:
            return
        self.tail.append(line)
        if self._on_stderr is not None:
            self._on_stderr(line)
        else:
            log.debug("%s: %s", self.binary, line)

    def _stdout_line(self, line: str) -> None:
        if self._kept < _KEEP_STDOUT:
            self._out.append(line)
            self._kept += len(line)
        else:
            self._overflow = True
        if self._on_stdout is not None:
            self._on_stdout(mask(line.rstrip("\n")))

    def output(self) -> str:
        """What the child printed on stdout (when not streamed); ToolError if that was more than a report."""
        if self._overflow:
            raise ToolError(f"{_what(self.binary, self.args)} printed more than {_KEEP_STDOUT >> 20} MiB on stdout")
        return "".join(self._out)

    # ---- the end: one path for exit status, timeout and stall -------------------------------------------------

    def poll(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while it runs."""
        alive, code = self._cmd.process.is_alive()
        return None if alive else int(code)

    def status(self, timeout: float | None = None, stall: float | None = None) -> int:
        """Wait for the exit and return its status. ToolError (the child stopped) if it runs longer than timeout or,
        with stall, if it reads and writes nothing at all (files, sockets, pipes: /proc/PID/io) for that many
        seconds: a tool without timeouts of its own (oras) would otherwise wait forever on a connection that went
        silent."""
        if stall is None:
            if not self._ended(timeout):
                self.stop()
                raise ToolError(f"{_what(self.binary, self.args)} did not finish within {timeout:g}s")
        else:
            self._wait_moving(timeout, stall)
        return self._reap()

    def wait(self, timeout: float | None = None, stall: float | None = None) -> None:
        """status(), and a ToolError with the masked stderr tail (else stdout's) unless the status is 0."""
        code = self.status(timeout, stall)
        if code != 0:
            detail = " | ".join(self.tail) or mask("".join(self._out).strip())[-500:] or "no output"
            raise ToolError(f"{_what(self.binary, self.args)} failed (exit {code}): {detail}")

    def _wait_moving(self, timeout: float | None, stall: float) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        seen, since = _io_bytes(self.pid), time.monotonic()
        while not self._ended(min(1.0, stall)):
            now = time.monotonic()
            if deadline is not None and now > deadline:
                self.stop()
                raise ToolError(f"{_what(self.binary, self.args)} did not finish within {timeout:g}s")
            count = _io_bytes(self.pid)
            if count is None or count != seen:  # unknown (no /proc): never called stalled
                seen, since = count, now
            elif now - since > stall:
                self.stop()
                raise ToolError(f"{_what(self.binary, self.args)} made no progress for {stall:g}s (nothing read "
                                f"or written: a stalled connection?)")

    def _ended(self, timeout: float | None) -> bool:
        """Has the child exited, waiting at most timeout seconds (None: as long as it takes)?"""
        if self._pidfd is not None:
            ready, _, _ = select.select([self._pidfd], [], [], timeout)
            return bool(ready)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _reap(self) -> int:
        """The exit status of an ended child, once sh has read the rest of its output."""
        try:
            self._cmd.wait()
        except sh.ErrorReturnCode:
            pass
        return int(self._cmd.process.exit_code)

    # ---- control -----------------------------------------------------------------------------------------------

    def pause(self) -> None:
        """SIGSTOP the child (back-pressure: it reads and writes nothing until resume; TCP flow control holds
        its servers meanwhile). Idempotent; nothing if it has ended."""
        self._signal(signal.SIGSTOP, paused=True)

    def resume(self) -> None:
        self._signal(signal.SIGCONT, paused=False)

    def _signal(self, sig: int, paused: bool) -> None:
        with self._state:
            if self.paused != paused and self.poll() is None:
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    pass
                self.paused = paused

    def stop(self) -> None:
        """Terminate (then kill) the child if it still runs, and reap it (a paused child is resumed to die)."""
        if self.poll() is None:
            try:
                self._cmd.terminate()
                self.resume()
                if not self._ended(_STOP_WAIT):
                    self._cmd.kill()
                    self._ended(_STOP_WAIT)
            except ProcessLookupError:
                pass
        try:
            self._reap()
        except Exception as exc:  # noqa: BLE001 -- a child that cannot be reaped is gone already
            log.debug("%s: not reaped: %s", self.binary, exc)

    def close(self, stdin_too: bool = False) -> None:
        """After stop or wait: our end of a streamed stdout and the pidfd closed. stdin (a pipe) is its writer's to
        close: a writer still blocked in it gets EPIPE once the child is gone."""
        for stream in (self.stdout, self.stdin if stdin_too else None):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if getattr(self, "_pidfd", None) is not None:
            os.close(self._pidfd)  # type: ignore[arg-type]
            self._pidfd = None


class Group:
    """Children started from several threads, all stopped at once by `stop()` (idempotent, any thread); once
    stopped the group starts nothing more (`spawn` raises ToolError)."""

    def __init__(self) -> None:
        self._children: set[Child] = set()
        self._lock = threading.Lock()
        self.stopped = False

    def spawn(self, binary: str, args: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: str | None = None, stream: bool = False, stdin: bool = False) -> Child:
        """`start` a child of the group (see start: stream, stdin)."""
        with self._lock:
            if self.stopped:
                raise ToolError(f"{_what(binary, [str(a) for a in args])}: not started, the transfer is being "
                                f"stopped")
            child = start(binary, args, env=env, cwd=cwd, stream=stream, stdin=stdin)
            self._children.add(child)
        return child

    def run(self, binary: str, args: Sequence[str], *, env: Mapping[str, str] | None = None,
            timeout: float | None = None, stall: float | None = None) -> str:
        """Like tools.run, but stoppable by the group: its stdout, ToolError on failure (see Child.status: stall)."""
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
        with open(f"/proc/{pid}/io") as io:
            fields = dict(line.split(":", 1) for line in io.read().splitlines() if ":" in line)
        return int(fields["rchar"]) + int(fields["wchar"])
    except (OSError, KeyError, ValueError):
        return None


def _pipe(mode: str) -> tuple[IO[bytes], int]:
    """A pipe to or from a child: our end opened unbuffered in `mode` ("wb": we write, the child reads; "rb": the
    child writes, we read) and widened, and the child's end as a descriptor."""
    read_end, write_end = os.pipe()
    ours, child = (write_end, read_end) if mode == "wb" else (read_end, write_end)
    pipe = os.fdopen(ours, mode, buffering=0)
    _widen_pipe(pipe)
    return pipe, child


def _widen_pipe(pipe: IO[bytes] | None, size: int = 1 << 20) -> None:
    """A 1 MiB pipe instead of 64 KiB for a bulk stream: fewer wake-ups on both sides (Linux; else left as is)."""
    try:
        import fcntl
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, size)  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):
        pass


def _what(binary: str, args: Sequence[str]) -> str:
    """'aws s3 cp' for error messages: the binary and its sub-command words, options and paths left out."""
    words: list[str] = []
    for a in args:
        if a.startswith("-") or "/" in a or len(words) == 2:
            break
        words.append(a)
    return " ".join([binary, *words])
