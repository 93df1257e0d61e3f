"""The signing settings of a job pointed at the local stack's sigstore services (e2e/sigstore.py)."""

from __future__ import annotations

NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def sigstore_env(sig, **extra: str) -> dict[str, str]:
    """What a cluster configured for upstream's signer sets, pointed at the stack (TSA as a base URL, as upstream
    takes it)."""
    return {"SIGSTORE_TUF_URL": sig.stack_sigstore_tuf_url, "SIGSTORE_FULCIO_URL": sig.stack_sigstore_fulcio_url,
            "SIGSTORE_REKOR_URL": sig.stack_sigstore_rekor_url,
            "SIGSTORE_TSA_URL": sig.stack_sigstore_tsa_url.removesuffix("/api/v1/timestamp"),
            "MODEL_SYNC_SIGNING_IDENTITY_TOKEN_PATH": sig.stack_sigstore_token_path, **NO_PROXY, **extra}
