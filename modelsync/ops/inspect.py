"""modelsync-inspect: what a modelcar image holds, read from its registry (manifest, config, referrers).

    modelsync-inspect oci://host/repo:tag            or host/repo@sha256:…
    modelsync-inspect … --files                      also pull it and list every file with its size and sha256
    modelsync-inspect … --json                       the same as one JSON document

Shows the manifest digest, when and from where it was made (annotations), the base image's layers, each model layer
(its title, size, and the files its source record lists), whether it carries /models/model.sig, and the
signatures attached to it as referrers. Private registries: --registry-username and the password in
MODEL_SYNC_INSPECT_REGISTRY_PASSWORD (never on the command line); --registry-ca-bundle; --registry-insecure for
plain HTTP. Exit 0, or 1 with one line when the image cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..clients.distribution import RegistryClient
from ..errors import ModelSyncError
from ..files import human
from ..locations import OciLocation, qualify_reference, strip_scheme
from ..modelcar import CREATED, SOURCE, SOURCE_RECORD
from ..oci_copy import repo_path
from ..oci_layout import TITLE
from ..secret import Secret, mask
from ..signing.model import SIGNATURE_NAME as SIGNATURE_FILE


def describe(target: OciLocation) -> dict[str, Any]:
    client, repo = RegistryClient(target), repo_path(target)
    manifest = client.manifest(repo, target.lookup)
    doc = manifest.json()
    if "layers" not in doc:
        raise ModelSyncError(f"{target.reference} is an index or list ({manifest.media_type}); inspect one of its "
                             f"images by digest")
    config = json.loads(client.blob(repo, doc["config"]["digest"]))
    base, model, signature = [], [], None
    for layer in doc["layers"]:
        annotations = layer.get("annotations") or {}
        title = annotations.get(TITLE)
        entry = {"digest": layer["digest"], "size": layer["size"], "mediaType": layer["mediaType"]}
        if title is None:
            base.append(entry)
        elif title == SIGNATURE_FILE:
            signature = entry
        else:
            record = annotations.get(SOURCE_RECORD)
            files = [{"path": f["path"], "size": f["size"], "sha256": f["sha256"], "from": f["url"]}
                     for f in json.loads(record)] if record else None
            model.append({**entry, "title": title, "files": files})
    referrers = client.referrers(repo, manifest.digest)
    return {"image": f"{target.repository}@{manifest.digest}", "digest": manifest.digest,
            "created": (doc.get("annotations") or {}).get(CREATED) or config.get("created"),
            "source": (doc.get("annotations") or {}).get(SOURCE),
            "platform": f"{config.get('os')}/{config.get('architecture')}",
            "base_layers": base, "model_layers": model, "model_sig": signature,
            "signatures": [{"digest": r["digest"], "artifactType": r.get("artifactType")} for r in referrers]}


def files(target: OciLocation, digest: str) -> list[dict[str, Any]]:
    from ..sources.oci import fetch_oci
    with tempfile.TemporaryDirectory(prefix="modelsync-inspect-") as tmp:
        pinned = OciLocation(f"{target.repository}@{digest}", target.username, target.password, target.tls_verify,
                             target.ca_bundle)
        found = fetch_oci(pinned, Path(tmp) / "model", Path(tmp) / "work", "oras")
        return [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in sorted(found, key=lambda f: f.path)]


def render(info: dict[str, Any]) -> str:
    out = [f"image      {info['image']}", f"created    {info['created']}  ({info['platform']})"]
    if info["source"]:
        out.append(f"source     {info['source']}")
    out.append(f"base       {len(info['base_layers'])} layer(s), "
               f"{human(sum(x['size'] for x in info['base_layers']))}")
    out.append(f"model      {len(info['model_layers'])} layer(s), "
               f"{human(sum(x['size'] for x in info['model_layers']))}")
    for layer in info["model_layers"]:
        out.append(f"  {layer['digest'][:19]}  {human(layer['size']):>10}  {layer['title']}")
        for f in layer["files"] or []:
            out.append(f"      {f['path']}  {f['size']}  sha256:{f['sha256'][:12]}…  from {f['from']}")
    out.append(f"model.sig  {'yes, ' + info['model_sig']['digest'][:19] if info['model_sig'] else 'no'}")
    out.append(f"signatures {len(info['signatures'])} referrer(s)" +
               "".join(f"\n  {s['digest']}  {s['artifactType']}" for s in info["signatures"]))
    if "files" in info:
        out.append(f"files      {len(info['files'])}")
        out += [f"  {f['sha256']}  {f['size']:>12}  {f['path']}" for f in info["files"]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="modelsync-inspect", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("image", help="oci://host/repo[:tag|@sha256:…]")
    p.add_argument("--files", action="store_true", help="pull the image and list its files with sha256")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--registry-username")
    p.add_argument("--registry-ca-bundle")
    p.add_argument("--registry-insecure", action="store_true", help="plain HTTP or unverified TLS")
    args = p.parse_args(argv)
    password = os.environ.get("MODEL_SYNC_INSPECT_REGISTRY_PASSWORD")
    target = OciLocation(qualify_reference(strip_scheme(args.image)), args.registry_username,
                         Secret(password) if password else None, not args.registry_insecure, args.registry_ca_bundle)
    try:
        info = describe(target)
        if args.files:
            info["files"] = files(target, info["digest"])
    except ModelSyncError as exc:
        print(f"modelsync-inspect: {mask(str(exc))}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
