"""The only place that runs external binaries (aws, oras, skopeo), through `sh`.

Rules kept here so no caller has to remember them:
- secrets go in through env or files, never argv: `run` refuses an argv that holds a known secret;
- stderr is streamed to the log line by line (masked) and its tail ends up in the ToolError;
- the child gets a minimal environment plus what the caller passes, so no stray AWS_* or DOCKER_CONFIG of the
  operator's shell changes what the job does.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence

import sh

from .errors import ToolError
from .secret import mask

log = logging.getLogger("modelsync.tools")

# Variables a child process legitimately needs from our environment; everything else must be passed explicitly.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "NO_PROXY", "no_proxy",
              "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
_STDERR_TAIL = 20


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
