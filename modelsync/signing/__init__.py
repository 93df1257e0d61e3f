"""Signing with sigstore: the model's files (model.sig, OpenSSF model-signing format) and the pushed image
(a cosign-compatible bundle attached as an OCI referrer). Natively in Python with sigstore-python.

    prepare(settings, scratch)  before the claim: the trust material (TUF or a local file), the services, Rekor's API
                           generation, Fulcio answering, the token file there. Nothing is signed yet.
    .sign_model(files)     the model.sig bundle for the files' sha256 (from the transfer), before they go up
    .sign_image(loc, dig)  the image's signature, after its push, attached to it in the registry; model.sig attached
                           too, as rh-model-signing reads it (oci_model.py), so its CLI verifies the image by reference
    .facts                 what was signed, by whom, and the transparency-log entries: ModelArtifact properties

The identity token is read right before the first signature (a projected token may expire during a long
transfer), and its certificate serves both signatures; only if that certificate has expired by the time the
image is pushed (Fulcio's live 10 minutes) is the token read again for a second one.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import secret
from ..errors import ConfigError, ModelSyncError
from ..secret import mask, redact_url
from . import model
from .model import SIGNATURE_NAME
from .trust import Services, SigningError, client_trust_config

if TYPE_CHECKING:  # sigstore and cryptography are imported when a signature is made (their import costs ~1 s)
    from cryptography.x509 import Certificate
    from sigstore.models import Bundle, ClientTrustConfig
    from sigstore.oidc import IdentityToken
    from sigstore.sign import Signer, SigningContext

    from ..locations import FileEntry, OciLocation
    from ..values import Config

log = logging.getLogger("modelsync.signing")

DEFAULT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
ISSUER_OIDS = ("1.3.6.1.4.1.57264.1.8", "1.3.6.1.4.1.57264.1.1")  # Fulcio's OIDC issuer (v2, then legacy)
CERT_MARGIN = dt.timedelta(seconds=60)  # a certificate closer than this to its end is not used for a signature
PROPERTY_PREFIX = "modelsync.signature."

__all__ = ["SIGNATURE_NAME", "Signing", "SigningError", "SigningSettings", "prepare"]


@dataclass(frozen=True)
class SigningSettings:
    """The signing settings, resolved once (from_config): where the identity token is, the SIGSTORE_* URLs, a
    local trust file and the TUF root's expected checksum."""
    token_path: Path
    sigstore_env: Mapping[str, str]
    trust_config: Path | None = None
    root_checksum: str | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> SigningSettings:
        return cls(Path(cfg.signing_identity_token_path) if cfg.signing_identity_token_path else DEFAULT_TOKEN,
                   dict(cfg.sigstore_env), Path(cfg.sigstore_trust_config) if cfg.sigstore_trust_config else None,
                   cfg.sigstore_root_checksum)


@dataclass
class Signing:
    trust: ClientTrustConfig
    services: Services
    token_file: Path
    model_name: str
    facts: dict[str, str] = field(default_factory=dict)
    _signer: Signer | None = None    # kept for the second signature
    _context: SigningContext | None = None
    _cert_end: dt.datetime | None = None
    _model_bundle: bytes | None = None  # model.sig, attached to the image for rh-model-signing (oci_model.py)

    def describe(self) -> dict[str, str]:
        """The services and token signing will use (for --dry-run and the log)."""
        s = self.services
        facts = {"fulcio": redact_url(s.fulcio or ""), "rekor": f"{redact_url(s.rekor or '')} (v{s.rekor_version})",
                 "identity token": str(self.token_file)}
        if s.tsa:
            facts["timestamp authority"] = redact_url(s.tsa)
        return facts

    # ---- the two signatures ---------------------------------------------------------------------------------

    def sign_model(self, files: tuple[FileEntry, ...] | list[FileEntry]) -> bytes:
        """The model.sig bundle (JSON bytes) over every file's path and sha256."""
        from sigstore.dsse import Statement

        covered = model.signed_files(files)
        doc = model.statement(self.model_name, covered)
        bundle = self._sign(lambda signer: signer.sign_dsse(Statement(json.dumps(doc).encode())), "the model")
        self._record("model", bundle)
        self.facts[PROPERTY_PREFIX + "model_digest"] = "sha256:" + doc["subject"][0]["digest"]["sha256"]
        self.facts[PROPERTY_PREFIX + "model_files"] = str(len(covered))
        log.info("signed the model: %d files, manifest sha256:%s, as %s (issuer %s), Rekor entry %s", len(covered),
                 doc["subject"][0]["digest"]["sha256"], self.facts[PROPERTY_PREFIX + "identity"],
                 self.facts[PROPERTY_PREFIX + "issuer"], self.facts.get(PROPERTY_PREFIX + "model_log_index", "?"))
        self._model_bundle = bundle.to_json().encode()
        return self._model_bundle

    def sign_image(self, target: OciLocation, digest: str) -> None:
        """Sign the pushed manifest digest and attach the bundle to the image in the registry."""
        from . import image

        bundle = self._sign(lambda signer: image.sign(signer, target, digest), "the image")
        referrer = image.attach(target, digest, bundle)
        self._record("image", bundle)
        self.facts[PROPERTY_PREFIX + "image_referrer"] = referrer
        log.info("signed the image %s@%s; signature %s attached as its referrer, Rekor entry %s",
                 target.repository, digest, referrer, self.facts.get(PROPERTY_PREFIX + "image_log_index", "?"))
        self._attach_model_signature(target, digest)

    def _attach_model_signature(self, target: OciLocation, digest: str) -> None:
        """model.sig beside the image as rh-model-signing looks for it (oci_model.py): no new signature."""
        from . import oci_model

        modelcar = oci_model.modelcar_of(target, digest)
        if modelcar is None:
            log.info("model.sig not attached for rh-model-signing: %s@%s is a ModelPack artifact, and that verifier "
                     "reads modelcar images (model.sig is the artifact's last layer)", target.repository, digest)
            return
        try:
            referrer, tag = oci_model.attach(target, modelcar, self._model_bundle)
        except oci_model.Mismatch as exc:
            raise SigningError(f"model.sig cannot be attached to {target.repository}@{modelcar}: {exc}") from None
        self.facts[PROPERTY_PREFIX + "model_referrer"] = referrer
        log.info("model.sig attached to the modelcar %s as %s%s (rh-model-signing verifies it by reference%s)",
                 modelcar, referrer, f" and tag {tag}" if tag else "",
                 "" if modelcar == digest else ": the hybrid's modelcar entry, by digest")

    # ---- helpers --------------------------------------------------------------------------------------------

    def _sign(self, action: Callable[[Signer], Bundle], what: str) -> Bundle:
        try:
            signer = self._current_signer()
            bundle = action(signer)
            self._cert_end = bundle.signing_certificate.not_valid_after_utc
            return bundle
        except ModelSyncError:
            raise
        except Exception as exc:
            raise SigningError(f"signing {what} failed: {_one_line(exc)}") from None

    def _current_signer(self) -> Signer:
        from sigstore.sign import Signer, SigningContext

        now = dt.datetime.now(dt.UTC)
        if self._signer is not None and self._cert_end is not None and now + CERT_MARGIN < self._cert_end:
            return self._signer
        if self._signer is not None:
            log.info("the signing certificate has expired during the transfer: reading the token again for another")
        token = read_token(self.token_file)
        if self._context is None:
            self._context = SigningContext.from_trust_config(self.trust)
        self._signer = Signer(token, self._context, cache=True)  # one key and certificate for both signatures
        return self._signer

    def _record(self, what: str, bundle: Bundle) -> None:
        self.facts.update(certificate_facts(bundle.signing_certificate))
        entry = (json.loads(bundle.to_json()).get("verificationMaterial") or {}).get("tlogEntries") or [{}]
        if "logIndex" in entry[0]:
            self.facts[f"{PROPERTY_PREFIX}{what}_log_index"] = str(entry[0]["logIndex"])
        self.facts[PROPERTY_PREFIX + "rekor"] = f"{redact_url(self.services.rekor or '')} " \
                                                f"(v{self.services.rekor_version})"


def read_token(path: Path) -> IdentityToken:
    """The identity token as sigstore-python takes it; SigningError with one line when missing, malformed or
    expired. Its audience is the client id Fulcio knows it by (a Kubernetes projected token: `sigstore`)."""
    from sigstore.oidc import IdentityToken

    where = f"identity token {path} (--signing-identity-token-path / MODEL_SYNC_SIGNING_IDENTITY_TOKEN_PATH)"
    try:
        raw = path.read_text().strip()
    except OSError as exc:
        raise SigningError(f"{where} cannot be read ({exc.strerror})") from None
    secret.register(raw)  # a bearer credential: masked wherever it could show
    try:
        claims = json.loads(base64.urlsafe_b64decode(raw.split(".")[1] + "=" * (-len(raw.split(".")[1]) % 4)))
    except (ValueError, IndexError):
        raise SigningError(f"{where} is not a JWT") from None
    expires = claims.get("exp")
    if isinstance(expires, (int, float)) and expires <= dt.datetime.now(dt.UTC).timestamp():
        when = dt.datetime.fromtimestamp(expires, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise SigningError(f"{where} expired at {when}; mount a projected service-account token (the kubelet keeps "
                           f"it fresh) or give a current one")
    aud = claims.get("aud")
    client_id = aud[0] if isinstance(aud, list) and aud else aud if isinstance(aud, str) else "sigstore"
    try:
        return IdentityToken(raw, client_id=client_id)
    except Exception as exc:
        raise SigningError(f"{where} is not usable: {_one_line(exc)}") from None


def certificate_facts(cert: Certificate) -> dict[str, str]:
    from cryptography import x509

    facts = {}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.UniformResourceIdentifier) + san.get_values_for_type(x509.RFC822Name)
        if names:
            facts[PROPERTY_PREFIX + "identity"] = names[0]
    except x509.ExtensionNotFound:
        pass
    for oid in ISSUER_OIDS:
        try:
            extension = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
        except x509.ExtensionNotFound:
            continue
        if not isinstance(extension, x509.UnrecognizedExtension):  # Fulcio's own OIDs: cryptography knows none
            continue
        raw = extension.value
        facts[PROPERTY_PREFIX + "issuer"] = _der_utf8(raw) if oid == ISSUER_OIDS[0] else raw.decode()
        break
    return facts


def _der_utf8(raw: bytes) -> str:
    """A DER UTF8String's text (the v2 issuer extension wraps the URL in one)."""
    if len(raw) >= 2 and raw[0] == 0x0C:
        length, start = raw[1], 2
        if length & 0x80:
            n = length & 0x7F
            length, start = int.from_bytes(raw[2:2 + n], "big"), 2 + n
        return raw[start:start + length].decode()
    return raw.decode(errors="replace")


def _one_line(exc: BaseException) -> str:
    """The failure in one line: the exception's text, else what its cause says (sigstore-python drops a Fulcio
    4xx's message: the HTTP status and the server's message are taken from the response it chains)."""
    text = str(exc).strip()
    cause = exc.__cause__ or exc.__context__
    response = getattr(cause, "response", None)
    if not text and response is not None:
        try:
            message = str(response.json().get("message") or "")
        except Exception:
            message = ""
        text = f"HTTP {response.status_code} from {redact_url(str(response.url))}" + (f": {message}" if message
                                                                                      else "")
    elif not text and cause is not None:
        text = _one_line(cause)
    lines = mask(f"{type(exc).__name__}: {text}" if text else type(exc).__name__).splitlines()
    return lines[0][:400]


def prepare(settings: SigningSettings, scratch: Path, model_name: str) -> Signing:
    """Everything signing needs that can fail before anything is claimed or moved."""
    tok = settings.token_path
    if not tok.is_file():
        raise ConfigError(f"signing is on but the identity token {tok} does not exist; mount a service-account token "
                          f"(audience sigstore) or set --signing-identity-token-path / "
                          f"MODEL_SYNC_SIGNING_IDENTITY_TOKEN_PATH")
    trust, services = client_trust_config(dict(settings.sigstore_env), settings.trust_config,
                                          settings.root_checksum, scratch / "sigstore")
    _check_fulcio(services.fulcio or "")
    prepared = Signing(trust=trust, services=services, token_file=tok, model_name=model_name)
    log.info("signing with %s", ", ".join(f"{k} {v}" for k, v in prepared.describe().items()))
    return prepared


def _check_fulcio(url: str) -> None:
    """Fulcio answers (its root certificate): a CA that is down fails the job before anything moves."""
    try:
        with urllib.request.urlopen(f"{url}/api/v1/rootCert", timeout=20) as resp:  # noqa: S310
            resp.read(1)
    except urllib.error.HTTPError as exc:
        raise SigningError(f"SIGSTORE_FULCIO_URL {redact_url(url)} answers HTTP {exc.code} for its root "
                           f"certificate; is it a Fulcio?") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SigningError(f"SIGSTORE_FULCIO_URL {redact_url(url)} cannot be reached: "
                           f"{getattr(exc, 'reason', exc)}") from None
