"""The other OCI formats of `--destination-oci-format`: a CNCF ModelPack artifact, and the hybrid index that holds
the modelcar and a ModelPack manifest over the same blobs.

Facts from the specs (modelpack/model-spec docs/spec.md, docs/config.md, docs/annotations.md, schema/config-schema
.json; olot 1.2.1 olot/basics.py; modctl pkg/modelfile/constants.go, pkg/backend/build), no code taken:

`modelpack`: an OCI image manifest with `artifactType` application/vnd.cncf.model.manifest.v1+json, config
application/vnd.cncf.model.config.v1+json = {"descriptor", "config", "modelfs": {"type": "layers", "diffIds"}}
(schema: no other keys), one layer per file as modctl builds by default with --raw: the layer blob IS the file
(`application/vnd.cncf.model.<role>.v1.raw`), so its digest is the file's sha256 and it is hashed once; the diffId
of a raw layer is that digest too (modctl BuildModelConfig lists the layer digests). Each layer carries
`org.cncf.model.filepath` (the file's path in the model) and `org.cncf.model.file.metadata+json` (name, mode,
uid, gid, size, mtime, typeflag as modctl writes them, but fixed: 0644, 0, 0, the image's created time, 0, so
the same files give the same digests), plus the title (for `oras pull`) and, for S3/HF sources, the re-sync source
record (modelcar.SOURCE_RECORD). Roles as modctl infers them from the file's name (first match of config, then
weight, code, doc patterns on the lower-cased base name; otherwise weight above 128 MB, else code); layers in
modctl's order: config files, weights, code, docs, each sorted by path. model.sig (the job's signature) is one
more raw layer, last. `descriptor.createdAt` is the modelcar's `created` (modelcar.created_time: SOURCE_DATE_EPOCH,
else the source's newest modification), `descriptor.sourceURL` the source when it is public; the manifest carries
`org.opencontainers.image.created` (and `.source`) as the modelcar does, which the OCI source reads back.

`hybrid`: an OCI image index (what the tag names, and so what the Model Registry URI pins) listing
1. the modelcar manifest exactly as `modelcar` would push it, with the platform it was built for, and
2. a ModelPack manifest whose layers are the modelcar's own model layer blobs (and its signature layer), as olot
   1.2.1 add_modelpack does: the same tar blobs, so nothing is stored twice and KServe pulls the modelcar while
   ModelPack tools pick the other entry (platform unknown/unknown, annotation
   `io.opendatahub.modelcar.manifest.type: modelpack`, as olot writes it).
Differences from olot 1.2.1, each on purpose:
- olot types every model layer `weight.v1.tar`; here a one-file layer is typed by its file's role (`<role>.v1.tar`,
  modctl's rules) and a layer shared by several files of one role by that role, a mixed one `weight` as olot does.
- olot's config lists diffIds as bare hex; the spec's diffIds are digests (`sha256:<hex>`), written so here.
- olot's config has an empty descriptor; here `createdAt` (and `sourceURL`) as in `modelpack`.
- olot annotates a layer with its title only; here also `org.cncf.model.filepath`: the layer's path in the tar
  (`models/<path>` of a one-file layer, `models/` of a shared one), since that is where a ModelPack tool unpacking
  the tar puts the file (a raw ModelPack layer could not be the modelcar's blob: the modelcar needs a tar).
- olot puts `io.opendatahub.author: olot` on the index entry (and on the modelcar manifest); here `modelsync` on
  the entry, which is what wrote it, and the entry also names the manifest's `artifactType` (OCI 1.1 descriptors).
- olot needs a multi-platform base and adds the ModelPack manifest to every index of it (and to the layout's
  index.json); here the modelcar is built for one platform, so the index has exactly two entries.
- olot's title (on the modelcar layer and the ModelPack layer) is the file's base name; here its path in the model
  (modelcar.py): base names collide (`a/config.json`, `b/config.json`), and `oras pull` writes a layer at its title.
- the index, the modelcar manifest and the ModelPack manifest carry `org.opencontainers.image.created` (and
  `.source`: the manifests) here, none in olot's (its modelcar manifest only `io.opendatahub.author: olot`): the
  OCI source and `modelsync inspect` read the date and source back from a manifest, and on the index it dates
  what the tag and the Model Registry URI pin (OCI's annotation for that); it is the image's fixed created time,
  so the same files still give the same digests.
- each modelcar layer here also carries the re-sync source record (modelcar.SOURCE_RECORD: where each file came
  from), which a re-sync compares to skip unchanged layers; olot has no re-sync.
- the modelcar config's history: olot writes `olot oci_layers_on_top <name>` dated when it ran, here
  `modelsync: COPY <path> /models/<path>` dated the image's `created`, which the config also carries.
"Same blobs" holds inside one index (the ModelPack manifest lists the modelcar's layer digests). An olot image and
a modelsync image of the same files do not share layer digests: olot's tar of a file keeps its mtime, mode 0664
and no directory entries, and is padded to a 10240-byte record (Python tarfile's default); modelsync's
(modelcar_layers.py) is mtime 0, 0644, with /models and each parent dir, and ends at its end-of-archive marker
(modctl `pull --extract-from-remote` hashes only what Go's tar reader consumes, and refuses olot's padded layers);
the files' own sha256 (olot.layer.content.digest) and the files in the tars are the same.
tests/stack/test_format_interop.py compares a hybrid with olot 1.2.1's for the same files and asserts each of these
differences, and nothing else.

modelpack and hybrid are pushed with oras only: skopeo 1.9 cannot copy an artifact (a config that is not an image
config), so config validation refuses them with the skopeo backend (destinations/oci.py).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .locations import FileEntry, Origin
from .modelcar import CREATED, SOURCE, ModelcarImage, layer_record
from .modelcar_layers import MODELS_DIR, ModelcarLayer
from .oci_layout import OCI_INDEX, OCI_MANIFEST, TITLE, Layout, canonical_json, descriptor, parse_platform

FORMATS = ("modelcar", "modelpack", "hybrid")
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_TYPE = "application/vnd.cncf.model.config.v1+json"
FILEPATH = "org.cncf.model.filepath"
FILE_METADATA = "org.cncf.model.file.metadata+json"
MANIFEST_KIND = "io.opendatahub.modelcar.manifest.type"  # olot's mark of the ModelPack entry of a hybrid index
AUTHOR = "io.opendatahub.author"
ROLES = ("config", "weight", "code", "doc")  # modctl's inference order and its layer order
_ROLE_TYPE = {"config": "weight.config", "weight": "weight", "code": "code", "doc": "doc", "dataset": "dataset"}
WEIGHT_THRESHOLD = 128 * 1000 * 1000  # modctl: an unrecognised file above this many bytes is a weight
FILE_MODE = 0o644


def media_type(role: str, raw: bool) -> str:
    """The spec's media type of a layer of role (config, weight, code, doc, dataset), raw file or uncompressed tar."""
    return f"application/vnd.cncf.model.{_ROLE_TYPE[role]}.v1.{'raw' if raw else 'tar'}"


MEDIA_TYPES = frozenset(media_type(role, raw) for role in _ROLE_TYPE for raw in (True, False))
RAW_TYPES = frozenset(t for t in MEDIA_TYPES if t.endswith(".raw"))

# modctl's name patterns (pkg/modelfile/constants.go), matched against the lower-cased base name.
_CONFIG = ("*.json *.jsonl *.json5 *.jsonc *.yaml *.yml *.toml *.ini *.config *.cfg *.conf *.properties *.props "
           "*.prop *.xml *.xsd *.rng *.modelcard *.meta *tokenizer.model* *.tiktoken vocab.txt merges.txt "
           "added_tokens.txt spiece.model sentencepiece*.model sentencepiece*.vocab tiktoken.model "
           "chat_template.jinja config.json.* *.hparams *.params *.hyperparams *.wandb *.mlflow *.tensorboard")
_WEIGHT = ("*.safetensors *.bin *.bin.* *.pt *.pth *.mar *.pte *.pt2 *.ptl *.tflite *.h5 *.hdf *.hdf5 *.pb *.meta "
           "*.data-* *.index *.gguf *.gguf.* *.ggml *.ggmf *.ggjt *.q4_0 *.q4_1 *.q5_0 *.q5_1 *.q8_0 *.f16 *.f32 "
           "*.ckpt *.checkpoint *.dist_ckpt tensor[0-9]*_[0-9]* *.tensor *.weights *.state *.embedding *.vocab "
           "*.ot *.engine *.trt *.onnx *.onnx_data* *.msgpack *.model *.pkl *.pickle *.keras *.joblib *.npy *.npz "
           "*.nc *.mlmodel *.coreml *.mil *.mleap *.surml *.llamafile *.llamafile.* *.caffemodel *.prototxt *.dlc "
           "*.circle *.nb *.arrow *.parquet *.ftz *.ark *.db")
_CODE = ("*.py *.ipynb *.sh *.patch *.c *.h *.hxx *.cpp *.cc *.cxx *.c++ *.hpp *.hh *.h++ *.java *.js *.mjs *.cjs "
         "*.jsx *.ts *.tsx *.go *.rs *.swift *.rb *.php *.scala *.kt *.kts *.r *.m *.mm *.f *.f90 *.f95 *.f03 "
         "*.f08 *.jl *.lua *.pl *.pm *.cs *.vb *.dart *.groovy *.elm *.erl *.hrl *.ex *.exs *.hs *.lhs *.clj "
         "*.cljs *.cljc *.cl *.lisp *.lsp *.scm *.ss *.rkt *.sql *.psql *.mysql *.sqlite *.zig *.cu *.cuh *.bash "
         "*.zsh *.fish *.csh *.tcsh *.ksh *.ps1 *.psm1 *.psd1 *.bat *.cmd *.vbs *.wsf *.applescript *.scpt *.awk "
         "*.sed *.expect *.env *.env.* .env* makefile* *.dockerfile dockerfile* *.mk *.cmake cmakelists.txt "
         "*.gradle *.gradle.kts build.gradle* settings.gradle* *.sbt *.mill *.bazel *.bzl build* workspace* "
         "*.buck buck* *.ninja *.gyp *.gypi *.waf wscript* package.json package-lock.json yarn.lock "
         "pnpm-lock.yaml requirements*.txt pipfile* pyproject.toml setup.cfg tox.ini poetry.lock cargo.toml "
         "cargo.lock go.mod go.sum composer.json composer.lock gemfile* *.gemspec mix.exs mix.lock rebar.config "
         "rebar.lock *.so *.dll *.dylib *.lib *.a")
_DOC = ("*.txt *.md *.pdf license* readme* setup* *requirements* *.log *.tfevents* *.doc *.docx *.docm *.dot "
        "*.dotx *.dotm *.rtf *.odt *.ott *.fodt *.pages *.wpd *.xls *.xlsx *.xlsm *.xlsb *.xlt *.xltx *.xltm *.ods "
        "*.ots *.fods *.numbers *.csv *.ppt *.pptx *.pptm *.pps *.ppsx *.ppsm *.pot *.potx *.potm *.odp *.otp "
        "*.fodp *.key *.epub *.mobi *.azw *.azw3 *.fb2 *.fb3 *.lit *.pdb *.djvu *.djv *.html *.htm *.xhtml "
        "*.mhtml *.mht *.xml *.xsl *.xslt *.tex *.latex *.ltx *.bib *.rst *.asciidoc *.adoc *.textile *.wiki "
        "*.mediawiki *.org *.texi *.texinfo *.info *.man *.chm *.hlp *.xps *.jpg *.jpeg *.png *.gif *.bmp *.tiff "
        "*.ico *.webp *.heic *.heif *.hevc *.svg *.mp4 *.mov *.avi *.mkv *.webm *.m4v *.flv *.wmv *.mpg *.mpeg")
_PATTERNS = (("config", _CONFIG.split()), ("weight", _WEIGHT.split()), ("code", _CODE.split()),
             ("doc", _DOC.split()))


def file_role(path: str, size: int) -> str:
    """config, weight, code or doc, as modctl infers it from the file's base name (and size)."""
    name = path.rsplit("/", 1)[-1].lower()
    for role, patterns in _PATTERNS:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return role
    return "weight" if size > WEIGHT_THRESHOLD else "code"


def plan_raw(files: Mapping[str, int]) -> list[tuple[str, ...]]:
    """One layer per file, in modctl's order: by role (ROLES), then by path."""
    return [(rel,) for rel in sorted(files, key=lambda rel: (ROLES.index(file_role(rel, files[rel])), rel))]


def raw_size(group: Sequence[tuple[str, int]]) -> int:
    """Bytes of a raw layer (layer_push's size function for modelpack): the file's own."""
    return sum(size for _, size in group)


def _metadata(entry: FileEntry, created_at: str) -> str:
    return json.dumps({"name": entry.path.rsplit("/", 1)[-1], "mode": FILE_MODE, "uid": 0, "gid": 0,
                       "size": entry.size, "mtime": created_at, "typeflag": 0},
                      separators=(",", ":"), ensure_ascii=False)


def raw_descriptor(layer: ModelcarLayer, created_at: str, origins: Mapping[str, Origin] | None) -> dict[str, Any]:
    """The ModelPack descriptor of a raw layer (one file: blob = file, digest = its sha256)."""
    entry = layer.files[0]
    annotations = {TITLE: entry.path, FILEPATH: entry.path, FILE_METADATA: _metadata(entry, created_at),
                   **layer_record(layer, origins)}
    return descriptor(media_type(file_role(entry.path, entry.size), True), layer.digest, layer.size,
                      annotations)


def tar_descriptor(layer: ModelcarLayer) -> dict[str, Any]:
    """The ModelPack descriptor of a modelcar layer (a tar of models/<path>...), for the hybrid index."""
    roles = {file_role(f.path, f.size) for f in layer.files}
    role = roles.pop() if len(roles) == 1 else "weight"
    where = f"{MODELS_DIR}/{layer.files[0].path}" if len(layer.files) == 1 else f"{MODELS_DIR}/"
    return descriptor(media_type(role, False), layer.digest, layer.size, {TITLE: layer.title, FILEPATH: where})


def model_config(diff_ids: Sequence[str], created_at: str, source: str | None) -> dict[str, Any]:
    described: dict[str, Any] = {"createdAt": created_at}
    if source:
        described["sourceURL"] = source
    return {"descriptor": described, "config": {}, "modelfs": {"type": "layers", "diffIds": list(diff_ids)}}


def _manifest(out: Layout, layers: list[dict[str, Any]], created_at: str,
              source: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(descriptor, document) of a ModelPack manifest over layers, its config written into out; layers must be
    uncompressed (a raw file or a plain tar), so each diffId is the layer's digest."""
    config = out.add_bytes(canonical_json(model_config([d["digest"] for d in layers], created_at, source)),
                           CONFIG_TYPE)
    annotations = {CREATED: created_at, **({SOURCE: source} if source else {})}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE, "config": config,
                "layers": layers, "annotations": annotations}
    return out.add_bytes(canonical_json(manifest), OCI_MANIFEST), manifest


def finish_modelpack(out: Layout, tag: str, layers: Sequence[ModelcarLayer], created_at: str, source: str | None,
                     origins: Mapping[str, Origin] | None = None,
                     signature: ModelcarLayer | None = None) -> ModelcarImage:
    """Config and manifest of the ModelPack artifact over raw layers (one file each, in plan_raw order; the
    signature's last), written into out and tagged. The layer blobs need not be in out (pushed already)."""
    descs = [raw_descriptor(layer, created_at, origins) for layer in layers]
    if signature is not None:
        descs.append(raw_descriptor(signature, created_at, None))
    desc, manifest = _manifest(out, descs, created_at, source)
    out.write_index(desc, tag)
    return ModelcarImage(out.root, tag, desc["digest"], manifest, tuple(layers), signature)


def finish_hybrid(out: Layout, tag: str, modelcar: ModelcarImage, platform: str, created_at: str,
                  source: str | None) -> ModelcarImage:
    """The index over the modelcar (already in out) and a ModelPack manifest over its model layer blobs (and its
    signature layer), written into out and tagged; the returned image is the index, its manifests in .parts."""
    layers = [*modelcar.layers, *([modelcar.signature] if modelcar.signature is not None else [])]
    pack_desc, pack = _manifest(out, [tar_descriptor(layer) for layer in layers], created_at, source)
    os_name, arch, variant = parse_platform(platform)
    car_platform = {"architecture": arch, "os": os_name, **({"variant": variant} if variant else {})}
    car_desc = descriptor(OCI_MANIFEST, modelcar.manifest_digest, len(canonical_json(modelcar.manifest)))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [{**car_desc, "platform": car_platform},
                           {**pack_desc, "artifactType": ARTIFACT_TYPE,
                            "platform": {"architecture": "unknown", "os": "unknown"},
                            "annotations": {AUTHOR: "modelsync", MANIFEST_KIND: "modelpack"}}],
             "annotations": {CREATED: created_at}}
    index_desc = out.add_bytes(canonical_json(index), OCI_INDEX)
    out.write_index(index_desc, tag)
    return ModelcarImage(out.root, tag, index_desc["digest"], index, modelcar.layers, modelcar.signature,
                         media_type=OCI_INDEX,
                         parts=((modelcar.manifest_digest, modelcar.manifest), (pack_desc["digest"], pack)))
