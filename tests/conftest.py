"""Shared pytest fixtures.

The local stack's logic lives in e2e/stack.py; the fixtures here only wire it into pytest. Rule for everything
that needs a real tool: locally, a tool that is not installed skips the test with the reason; under CI=true it
fails, because CI must never turn green by skipping.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `pytest` without `python -m` does not put the repo root on sys.path
    sys.path.insert(0, str(REPO_ROOT))
# the helpers in tests/support assert too: rewrite them as pytest rewrites test modules, for the same messages
pytest.register_assert_rewrite("tests.support")

from e2e.mrproxy import ProxyHandle, start_proxy  # noqa: E402
from e2e.stack import LocalStack, MissingToolsError, StackEnv, find_tool  # noqa: E402


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: missing components fail, never skip)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------- the local stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEnv]:
    """The running local stack (see e2e/stack.py for the attributes: stack.minio_endpoint, stack.mr_url, ...).

    Reuses the stack in $MODELSYNC_STACK_DIR when it is up (and leaves it running); otherwise starts one in a
    temporary directory for this session and stops it at the end.
    """
    shared = os.environ.get("MODELSYNC_STACK_DIR")
    if shared and LocalStack(Path(shared)).is_up():
        yield LocalStack(Path(shared)).info()
        return
    local = LocalStack(tmp_path_factory.mktemp("stack"))
    try:
        local.up()
    except MissingToolsError as err:
        unavailable(str(err))
    try:
        yield local.info()
    finally:
        local.down()


@pytest.fixture(scope="session")
def sigstore_stack(stack: StackEnv) -> StackEnv:
    """The stack with its sigstore group up (e2e/sigstore.py: Fulcio, TesseraCT, TSA, Rekor v2 and v1, a TUF
    repository): the `stack` attributes plus sigstore_tuf_url, sigstore_token_path, sigstore_trust_config, ...
    (STACK_SIGSTORE_*).

    Started on first use into the session's stack (also into a reused $MODELSYNC_STACK_DIR stack, left running
    with it); stopped with the stack. The token file is minted afresh by each call of `.info()`.
    """
    local = LocalStack(stack.state_dir)
    try:
        local.up(groups=("sigstore",))
    except MissingToolsError as err:
        unavailable(str(err))
    return local.info()


@pytest.fixture
def mr_proxy_factory(stack: StackEnv) -> Iterator[Callable[..., ProxyHandle]]:
    """Start extra e2e.mrproxy instances in this process in front of the stack's Model Registry.

    mr_proxy_factory(v1_only=True), mr_proxy_factory(deprecation_sunset="..."), mr_proxy_factory(token="t");
    each returns a handle with .port and .url, stopped at the end of the test.
    """
    handles: list[ProxyHandle] = []

    def start(**options) -> ProxyHandle:
        handles.append(start_proxy(stack.mr_url, **options))
        return handles[-1]

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture(scope="session")
def require_tool() -> Callable[[str], str]:
    """require_tool("oras") -> its path; skips (locally) or fails (CI) when it is not installed."""

    def find(name: str) -> str:
        path = find_tool(name)
        if path is None:
            unavailable(f"{name} not installed; run e2e/install-tools.sh")
        return path

    return find


# ---------------------------------------------------------------- the reference tools (tests/support/olot_ref.py)


@pytest.fixture(scope="session")
def modctl_bin(require_tool: Callable[[str], str]) -> str:
    return require_tool("modctl")


@pytest.fixture(scope="session")
def olot() -> Path:
    """olot's CLI in its own venv (e2e/install-tools.sh olot)."""
    from tests.support.olot_ref import olot_cli, olot_venv

    cli = olot_cli()
    if cli is None:
        unavailable(f"olot not installed in {olot_venv()}; run e2e/install-tools.sh olot")
    assert cli is not None
    return cli


# ---------------------------------------------------------------- a real Kubernetes (e2e/kubernetes.py)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A running single-node Kubernetes cluster (e2e.kubernetes.Cluster: .kubectl(), .import_image(), .issuer_url,
    .ca_file, .env()).

    Reuses the cluster in $MODELSYNC_K8S_DIR when it is up (and leaves it running); otherwise starts one in a
    temporary directory for this session and stops it at the end (processes, containers, mounts).
    """
    from e2e.kubernetes import Cluster, MissingToolsError
    shared = os.environ.get("MODELSYNC_K8S_DIR")
    if shared and Cluster(Path(shared)).is_up():
        yield Cluster(Path(shared))
        return
    local = Cluster(tmp_path_factory.mktemp("k8s"))
    try:
        local.up()
    except MissingToolsError as err:
        unavailable(str(err))
    try:
        yield local
    finally:
        local.down()


# ---------------------------------------------------------------- shared job fixtures


@pytest.fixture(scope="module")
def base_image(stack, tmp_path_factory) -> str:
    """A busybox modelcar base pushed to the stack's plain registry (Docker Hub is out of reach here)."""
    from modelsync.locations import OciLocation
    from modelsync.oci_copy import push_layout

    from .support.oci_helpers import busybox_layout
    ref = f"{stack.oci_registry}/library/busybox:latest"
    root = tmp_path_factory.mktemp("busybox")
    push_layout(busybox_layout(root / "layout"), "latest", OciLocation(ref, tls_verify=False), "latest", root / "w",
                "skopeo")
    return ref


@pytest.fixture
def http_root(tmp_path):
    """A directory served over HTTP on a free local port: (root, url), stopped at the end of the test."""
    from .support.servers import serve_directory
    root = tmp_path / "www"
    root.mkdir()
    with serve_directory(root) as url:
        yield root, url


@pytest.fixture
def model(tmp_path) -> tuple[Path, dict[str, str]]:
    """The sample model (tests/support/models.py) under tmp_path/model-src, with its sha256 per file."""
    from .support.models import make_model
    root = tmp_path / "model-src"
    return root, make_model(root)


@pytest.fixture
def small_fs(tmp_path):
    """An 8 MiB tmpfs (tests.support.archives.FS_SIZE): shutil.disk_usage and ENOSPC are the real ones. Needs root
    (mount); skipped locally without."""
    from .support.archives import FS_SIZE
    from .support.mounts import tmpfs
    with tmpfs(tmp_path / "small", size=str(FS_SIZE)) as mnt:
        yield mnt
