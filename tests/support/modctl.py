"""modctl (the ModelPack CLI, github.com/modelpack/modctl v0.1.1, built by e2e/install-tools.sh) as a reference client:
pull a ModelPack artifact from a registry by reference and unpack its files, as a ModelPack user would.

Everything modctl keeps goes under one directory of the test's (`Modctl.home`), nothing under $HOME:
- `--storage-dir HOME/storage` (its local OCI store: built and pulled artifacts, default ~/.modctl) and
  `--log-dir HOME/logs` (default ~/.modctl/logs) on every command;
- credentials: `modctl login` writes them through oras-go's Docker credential store, i.e. $DOCKER_CONFIG/config.json
  (default ~/.docker): DOCKER_CONFIG=HOME/docker, and HOME=HOME/home for anything else that looks there;
- TLS: a Go binary trusts $SSL_CERT_FILE, so `ca_file` verifies a test registry's certificate for real (no
  `--insecure`); plain-HTTP registries take `--plain-http` (pull, push, fetch, login, build --output-remote);
- the password never in argv: `login` reads it from a 0600 `--authfile` (v0.1.1's --password-stdin wants a tty);
- no HTTP proxy from the environment (the registries are on loopback).

What modctl v0.1.1 does, read in its sources and checked here (tests/stack/test_reference_tools.py):
- `build` writes the *legacy* CNAI media types of github.com/dragonflyoss/model-spec
  (`application/vnd.cnai.model.manifest.v1+json`, `…cnai.model.weight.v1.raw`, `org.cnai.model.filepath`, a config
  whose modelfs says `diff_ids`), not the CNCF ones (`vnd.cncf.model.*`, `org.cncf.model.filepath`, `diffIds`);
  raw layers by default (`--raw=false`: one-file tar layers); `--no-creation-time` leaves createdAt out, but the
  manifest annotation `org.cnai.modctl.modelfile` holds the Modelfile with a "Generated at" time, so two builds differ.
- `extract`/`fetch`/`pull --extract-from-remote` read both: the file path from `org.cncf.model.filepath`, else
  `org.cnai.model.filepath`; the codec from the media type's suffix only: `.raw` writes the blob to that path (mode
  and mtime from the `…file.metadata+json` annotation when present), `.tar` untars it into the output directory
  (the path annotation unused; absolute or `..` names refused); any other suffix (`.tar+gzip`, `.tar+zstd`) fails
  with "unsupported codec type". `pull --extract-from-remote` also hashes what it read of each blob and fails when
  that is not the layer digest: a tar layer must end at its two end-of-archive blocks (Go's tar reader stops there),
  so Python tarfile's padding to 10240-byte records (olot's layers) fails it, while `pull` + `extract` accepts them.
- references are repo:tag only: repo@sha256:… is refused ("invalid reference").
- a failed pull is retried 6 times with back-off (135 s): `first_error` returns an expected error once logged.
- `modelfile generate` classifies by file name (case-insensitive glob on the base name), first match wins: CONFIG
  (*.json, *.yaml, *.toml, …), then MODEL (*.safetensors, *.bin, *.pt, *.gguf, *.onnx, *.pkl, …), then CODE (*.py,
  *.sh, requirements*.txt, …), then DOC (*.md, *.txt, LICENSE*, README*, *.csv, images, …); anything else is MODEL
  when larger than 128 MB, else CODE. Hidden files, `modelfile`, __pycache__ and *.pyc/pyo/pyd are left out.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT = 300  # seconds per modctl command
ROLES = ("CONFIG", "MODEL", "CODE", "DOC", "DATASET")
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


class ModctlError(RuntimeError):
    pass


@dataclass(frozen=True)
class Modctl:
    """One modctl with its own storage, logs and credentials under `home` (see the module docstring)."""

    binary: str
    home: Path
    ca_file: Path | None = None  # trusted for TLS registries (SSL_CERT_FILE)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        env.update(HOME=str(self.home / "home"), DOCKER_CONFIG=str(self.home / "docker"),
                   NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        if self.ca_file is not None:
            env["SSL_CERT_FILE"] = str(self.ca_file)
        return env

    def argv(self, *args: str) -> list[str]:
        """modctl ARGS with the global flags that keep it in `home` (made here)."""
        for sub in ("home", "docker", "storage", "logs"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        return [self.binary, *args, "--storage-dir", str(self.home / "storage"), "--log-dir", str(self.home / "logs"),
                "--no-progress"]

    def run(self, *args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
        """modctl ARGS; its output, or ModctlError with it."""
        argv = self.argv(*args)
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=self.env(), cwd=cwd,
                              timeout=TIMEOUT, check=False)
        if proc.returncode != 0:
            raise ModctlError(f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc.stdout + proc.stderr

    def first_error(self, *args: str, match: str, timeout: float = 60.0) -> str:
        """Run modctl ARGS expecting it to fail, and return the first error it logs (level=error in
        HOME/logs/modctl.log) that contains `match`, as soon as it is logged, stopping modctl then: a failed pull is
        retried 6 times with back-off (5 s doubling to 60 s), 135 s before modctl exits, and its layers run
        concurrently, so another layer's error may come first. ModctlError when modctl exits, or `timeout` passes,
        without logging one (the errors it did log in the message)."""
        argv = self.argv(*args)
        log = self.home / "logs" / "modctl.log"
        start = log.stat().st_size if log.exists() else 0
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env())
        deadline = time.monotonic() + timeout
        errors: list[str] = []
        try:
            while True:
                exited = proc.poll() is not None
                if log.exists():
                    with log.open("rb") as f:
                        f.seek(start)
                        errors = [line for line in f.read().decode(errors="replace").splitlines()
                                  if "level=error" in line]
                for line in errors:
                    if match in line:
                        return line
                if exited or time.monotonic() > deadline:
                    how = f"exited {proc.returncode}" if exited else f"still running after {timeout:.0f} s"
                    raise ModctlError(f"{shlex.join(argv)} {how} without an error containing {match!r}; its errors:\n"
                                      + "\n".join(errors))
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def login(self, registry: str, username: str, password: str, *, plain_http: bool = False) -> None:
        """`modctl login` (which checks the credentials against the registry, then stores them in DOCKER_CONFIG).
        v0.1.1 reads a password only from argv, a terminal (`--password-stdin` is a tty prompt: "inappropriate ioctl
        for device" from a pipe) or `--authfile`: a Docker config file, written 0600 here and removed after."""
        self.home.mkdir(parents=True, exist_ok=True)
        authfile = self.home / "login-auth.json"
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        fd = os.open(authfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": {registry: {"auth": auth}}}, f)
        try:
            self.run("login", registry, "--authfile", str(authfile), *(["--plain-http"] if plain_http else []))
        finally:
            authfile.unlink()

    def generate_modelfile(self, model_dir: Path, name: str = "model") -> Path:
        """`modctl modelfile generate`: modctl's own classification of model_dir's files; the Modelfile's path."""
        out = self.home / "modelfiles" / name
        out.mkdir(parents=True, exist_ok=True)
        self.run("modelfile", "generate", str(model_dir), "--output", str(out), "--name", name, "--overwrite")
        return out / "Modelfile"

    def build(self, model_dir: Path, target: str, *, modelfile: Path | None = None, raw: bool = True) -> None:
        """`modctl build` of model_dir into the local storage as `target` (Modelfile generated when not given)."""
        modelfile = modelfile or self.generate_modelfile(model_dir)
        self.run("build", str(model_dir), "--modelfile", str(modelfile), "--target", target,
                 f"--raw={str(raw).lower()}", "--no-creation-time")

    def push(self, target: str, *, plain_http: bool = False) -> None:
        self.run("push", target, *(["--plain-http"] if plain_http else []))

    def pull(self, reference: str, *, plain_http: bool = False) -> None:
        """`modctl pull` into the local storage (then `extract`)."""
        self.run("pull", reference, *(["--plain-http"] if plain_http else []))

    def extract(self, reference: str, output: Path) -> Path:
        """`modctl extract` of a pulled (or built) artifact into output."""
        self.run("extract", reference, "--output", str(output))
        return output

    def pull_extract(self, reference: str, output: Path, *, plain_http: bool = False) -> Path:
        """Pull `reference` and unpack its files into output in one go (`pull --extract-from-remote`, nothing kept in
        the local storage): what a ModelPack user does to get a model's files."""
        self.run("pull", reference, "--extract-dir", str(output), "--extract-from-remote",
                 *(["--plain-http"] if plain_http else []))
        return output

    def fetch(self, reference: str, output: Path, patterns: list[str], *, plain_http: bool = False) -> Path:
        """`modctl fetch`: only the files whose path matches one of the glob patterns."""
        self.run("fetch", reference, "--output", str(output), "--patterns", ",".join(patterns),
                 *(["--plain-http"] if plain_http else []))
        return output


def modelfile_roles(modelfile: Path) -> dict[str, str]:
    """{relative path: role} of a Modelfile's CONFIG/MODEL/CODE/DOC/DATASET lines (quoted names unquoted)."""
    roles: dict[str, str] = {}
    for line in modelfile.read_text().splitlines():
        m = re.match(r"^(\w+)\s+(.+)$", line.strip())
        if m and m.group(1) in ROLES:
            (path,) = shlex.split(m.group(2))
            roles[path] = m.group(1)
    return roles


def files_of(root: Path) -> dict[str, bytes]:
    """{relative path: content} of every regular file under root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def registry_get(registry: str, path: str, accept: str = MANIFEST_ACCEPT) -> bytes:
    """GET http://REGISTRY/v2/PATH on a plain-HTTP registry without auth (never through a proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(f"http://{registry}/v2/{path}", headers={"Accept": accept}),
                     timeout=30) as resp:
        data: bytes = resp.read()
        return data


def manifest_and_config(registry: str, repo: str, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest of repo:ref on a plain-HTTP registry and its config blob, parsed."""
    manifest = json.loads(registry_get(registry, f"{repo}/manifests/{ref}"))
    config = json.loads(registry_get(registry, f"{repo}/blobs/{manifest['config']['digest']}", accept="*/*"))
    return manifest, config
