"""modelsync-verify: check a synced model against its signatures, for an expected signer.

    modelsync-verify oci://host/repo@sha256:...  --identity ID --issuer URL [trust]
        the image's cosign-format signature (a referrer bound to that manifest digest), then the image's files
        (pulled, digests checked) against the model.sig inside it
    modelsync-verify /path/to/model              --identity ID --issuer URL [trust]
        the directory's files against its model.sig

    trust: --trust-config FILE (a trusted_root.json or client trust config), else --tuf-url URL (with
           --root-checksum), else MODEL_SYNC_SIGSTORE_TRUST_CONFIG / SIGSTORE_TUF_URL from the environment

Exit 0 with one line saying what verified; 1 with one line saying why not; 2 for wrong usage. Registry credentials
for a private image: --registry-username and the password in MODEL_SYNC_VERIFY_REGISTRY_PASSWORD (never in argv).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelSyncError
from ..files import sha256_file
from ..locations import OciLocation
from ..secret import Secret, mask
from . import image, model
from .trust import from_tuf, read_local

if TYPE_CHECKING:  # imported when a signature is verified
    from sigstore.models import TrustedRoot

IDENTITY_HELP = "the certificate's identity (SAN), e.g. https://kubernetes.io/namespaces/NS/serviceaccounts/SA"


class NotVerified(ModelSyncError):
    """A signature is missing, does not verify for the identity, or does not match the model."""


def trusted_root(trust_config: str | None, tuf_url: str | None, checksum: str | None,
                 scratch: Path) -> TrustedRoot:
    from sigstore.models import TrustedRoot

    if trust_config:
        root, _ = read_local(Path(trust_config))
    elif tuf_url:
        root, _ = from_tuf(tuf_url, checksum, scratch / "tuf")
    else:
        raise NotVerified("no root of trust: give --trust-config FILE or --tuf-url URL (or set "
                          "MODEL_SYNC_SIGSTORE_TRUST_CONFIG / SIGSTORE_TUF_URL)")
    path = scratch / "trusted_root.json"
    path.write_text(json.dumps(root))
    return TrustedRoot.from_file(str(path))


def _verified_payload(bundle_json: bytes | str, root: TrustedRoot, identity: str, issuer: str) -> bytes:
    from sigstore.models import Bundle
    from sigstore.verify import Verifier, policy

    bundle = Bundle.from_json(bundle_json)
    payload_type, payload = Verifier(trusted_root=root).verify_dsse(
        bundle, policy.Identity(identity=identity, issuer=issuer))
    if payload_type != "application/vnd.in-toto+json":
        raise NotVerified(f"the signature holds {payload_type}, not an in-toto statement")
    return payload


def verify_directory(path: Path, root: TrustedRoot, identity: str, issuer: str) -> str:
    sig = path / model.SIGNATURE_NAME
    if not sig.is_file():
        raise NotVerified(f"{path}: no {model.SIGNATURE_NAME}; the model was not signed")
    try:
        payload = _verified_payload(sig.read_bytes(), root, identity, issuer)
        signed = model.manifest_of(payload)
        ignored = set(json.loads(payload)["predicate"]["serialization"].get("ignore_paths") or [])
    except NotVerified:
        raise
    except Exception as exc:
        raise NotVerified(f"{sig}: {_one_line(exc)}") from None
    actual = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink()):
        rel = file.relative_to(path).as_posix()
        if rel in ignored:
            continue
        if file.is_symlink() or not file.is_file():
            raise NotVerified(f"{path}: {rel} is not a regular file")
        actual[rel] = sha256_file(file)
    missing = sorted(set(signed) - set(actual))
    extra = sorted(set(actual) - set(signed))
    changed = sorted(p for p in set(signed) & set(actual) if signed[p] != actual[p])
    for what, names in (("changed since signing", changed), ("missing", missing), ("not signed", extra)):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            raise NotVerified(f"{path}: {', '.join(names[:3])}{more} {'is' if len(names) == 1 else 'are'} {what}")
    return f"{len(signed)} files match model.sig, signed by {identity} ({issuer})"


def verify_image(target: OciLocation, root: TrustedRoot, identity: str, issuer: str, scratch: Path) -> str:
    digest = target.digest
    if not digest:
        raise NotVerified(f"{target.reference}: name the image by digest (…@sha256:…), the thing that was signed")
    found = image.bundles(target, digest)
    if not found:
        raise NotVerified(f"{target.repository}@{digest}: no signature attached (no sigstore bundle referrer)")
    reasons = []
    for bundle in found:
        try:
            statement = json.loads(_verified_payload(bundle, root, identity, issuer))
            subjects = [s.get("digest", {}).get("sha256") for s in statement.get("subject") or []]
            if digest.split(":", 1)[1] not in subjects:
                raise NotVerified("signed for another image (its statement names another digest)")
            break
        except Exception as exc:
            reasons.append(_one_line(exc))
    else:
        raise NotVerified(f"{target.repository}@{digest}: no attached signature verifies: {'; '.join(reasons)}")
    from ..sources.oci import fetch_oci

    files_dir = scratch / "model"
    fetch_oci(target, files_dir, scratch / "work", "oras")
    return f"image signature verified; {verify_directory(files_dir, root, identity, issuer)}"


def _one_line(exc: BaseException) -> str:
    lines = mask(str(exc)).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="modelsync-verify", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("target", help="oci://host/repo@sha256:... or a directory")
    p.add_argument("--identity", required=True, help=IDENTITY_HELP)
    p.add_argument("--issuer", required=True, help="the OIDC issuer URL the certificate names")
    p.add_argument("--trust-config", default=os.environ.get("MODEL_SYNC_SIGSTORE_TRUST_CONFIG"),
                   help="trusted_root.json or a client trust config")
    p.add_argument("--tuf-url", default=os.environ.get("SIGSTORE_TUF_URL"), help="a TUF repository")
    p.add_argument("--root-checksum", default=os.environ.get("MODEL_SYNC_SIGSTORE_ROOT_CHECKSUM"),
                   help="sha256 the TUF root.json must have")
    p.add_argument("--registry-username", help="for a private registry (password: MODEL_SYNC_VERIFY_REGISTRY_PASSWORD)")
    p.add_argument("--registry-ca-bundle", help="PEM file trusted for the registry")
    p.add_argument("--registry-insecure", action="store_true", help="plain HTTP or unverified TLS to the registry")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="modelsync-verify-") as tmp:
            scratch = Path(tmp)
            root = trusted_root(args.trust_config, args.tuf_url, args.root_checksum, scratch)
            if args.target.startswith("oci://") or "@sha256:" in args.target:
                password = os.environ.get("MODEL_SYNC_VERIFY_REGISTRY_PASSWORD")
                target = OciLocation(reference=args.target.removeprefix("oci://"), username=args.registry_username,
                                     password=Secret(password) if password else None,
                                     tls_verify=not args.registry_insecure, ca_bundle=args.registry_ca_bundle)
                what = verify_image(target, root, args.identity, args.issuer, scratch)
            elif Path(args.target).is_dir():
                what = verify_directory(Path(args.target), root, args.identity, args.issuer)
            else:
                print(f"modelsync-verify: {args.target} is neither oci://…@sha256:… nor a directory", file=sys.stderr)
                return 2
    except ModelSyncError as exc:
        print(f"NOT VERIFIED: {_one_line(exc)}", file=sys.stderr)
        return 1
    print(f"VERIFIED: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

