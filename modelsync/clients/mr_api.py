"""The one seam between the pinned ``model-registry`` client and the server's REST API generation.

The pinned client (``model-registry==0.3.18``) hard-codes ``/api/model_registry/v1/`` in every ``resource_path``,
and ``ApiClient.param_serialize`` builds ``configuration.host + resource_path``, so no host or base-path setting
can change the prefix. :class:`PrefixedApiClient` subclasses that ``ApiClient`` and rewrites the prefix of each URL
it serializes; the request payloads of the entities used here are identical in both generations
(``../shared/MODEL-REGISTRY.md``). It also watches responses for a ``Deprecation`` header.

:func:`detect_api_version` probes ``GET {prefix}/registered_models?pageSize=1`` with ``v1`` first, then
``v1alpha3``; the first answer that is not 404 wins. Nothing else in modelsync knows about prefixes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from mr_openapi.api.model_registry_service_api import ModelRegistryServiceApi
from mr_openapi.api_client import ApiClient
from mr_openapi.configuration import Configuration
from mr_openapi.exceptions import ApiException, OpenApiException
from mr_openapi.rest import RESTResponse

from ..errors import RegistryError
from ..retry import TRANSIENT_STATUSES, Policy, Transient, http_status
from ..secret import mask

log = logging.getLogger("modelsync.registry")

API_VERSIONS = ("v1", "v1alpha3")  # probe order: the newer generation first
CLIENT_API_VERSION = "v1"          # what the pinned client speaks
_BASE = "/api/model_registry/"


def prefix(api_version: str) -> str:
    return f"{_BASE}{api_version}/"


class PrefixedApiClient(ApiClient):
    """The generated ApiClient, speaking the REST prefix of ``api_version`` instead of the client's own."""

    def __init__(self, configuration: Configuration, api_version: str,
                 on_deprecation: Callable[[str, str | None], None] | None = None):
        if api_version not in API_VERSIONS:
            raise ValueError(f"unknown Model Registry API version {api_version!r}")
        super().__init__(configuration)
        self.api_version = api_version
        self._on_deprecation = on_deprecation

    def param_serialize(self, *args: Any, **kwargs: Any) -> tuple[Any, str, Any, Any, Any]:
        method, url, headers, body, post_params = super().param_serialize(*args, **kwargs)
        return method, self.rewrite(url), headers, body, post_params

    def rewrite(self, url: str) -> str:
        """host + client prefix + rest -> host + our prefix + rest (only right after the host)."""
        client, ours = prefix(CLIENT_API_VERSION), prefix(self.api_version)
        host = str(self.configuration.host)
        if client == ours or not url.startswith(host + client):
            return url
        return host + ours + url[len(host) + len(client):]

    async def call_api(self, *args: Any, **kwargs: Any) -> RESTResponse:
        response = await super().call_api(*args, **kwargs)
        deprecation = response.getheader("Deprecation")  # type: ignore[no-untyped-call]  # unannotated in the client
        if deprecation is not None and self._on_deprecation is not None:
            self._on_deprecation(self.api_version, response.getheader("Sunset"))  # type: ignore[no-untyped-call]
        return response


def check_client_prefix() -> None:
    """Fail loudly if a client upgrade changed the hard-coded prefix this seam rewrites."""
    client = ApiClient(Configuration(host="http://client.invalid"))
    _, url, *_ = ModelRegistryServiceApi(client)._get_registered_models_serialize(
        filter_query=None, page_size="1", order_by=None, sort_order=None, next_page_token=None,
        _request_auth=None, _content_type=None, _headers=None, _host_index=0)
    if not url.startswith("http://client.invalid" + prefix(CLIENT_API_VERSION)):
        raise RuntimeError(f"model-registry client no longer uses {prefix(CLIENT_API_VERSION)} ({url}): "
                           "update modelsync/mr_api.py")


async def probe(client: PrefixedApiClient, timeout: float) -> tuple[int, str]:
    """(status, body text) of ``GET {prefix}/registered_models?pageSize=1``; nothing is deserialized, so a
    foreign entity the client cannot parse cannot break detection."""
    api = ModelRegistryServiceApi(client)
    serialized = api._get_registered_models_serialize(
        filter_query=None, page_size="1", order_by=None, sort_order=None, next_page_token=None,
        _request_auth=None, _content_type=None, _headers=None, _host_index=0)
    response = await client.call_api(*serialized, _request_timeout=timeout)
    body = (await response.read()).decode("utf-8", "replace")  # type: ignore[no-untyped-call]  # unannotated
    if response.status in TRANSIENT_STATUSES:  # worth another try, like any other request
        busy = ApiException(status=response.status, reason=response.reason, body=body)
        busy.headers = response.getheaders()  # type: ignore[no-untyped-call]  # for its Retry-After
        raise busy
    return response.status, body


def looks_like_list(body: str) -> bool:
    """A Model Registry list answer is a JSON object with ``items`` or ``size``."""
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and ("items" in doc or "size" in doc)


# ---------------------------------------------------------------- connection: event loop, retries, errors

T = TypeVar("T")


class NotFound(RegistryError):
    """The server answered 404 (or 400 for an id that is not a number: no such entity either)."""


class Conflict(RegistryError):
    """The server answered 409: a name (or externalId) is taken."""


class TokenRejected(RegistryError):
    """The server (or the proxy in front of it) answered 401 or 403."""


@dataclass(frozen=True)
class RetryPolicy(Policy):
    """retry.py's one policy with the Model Registry's figures as defaults: 4 tries, waits 0.5, 1, 2 s (at most 4),
    30 s per request. Shorter than retry.DEFAULT's because a stalled server costs attempts x timeout before the job
    can mark the artifact ABANDONED (tests/test_faults.py bounds that whole job at 200 s)."""

    first_delay: float = 0.5
    max_delay: float = 4.0
    timeout: float = 30.0


class Connection:
    """A PrefixedApiClient on a private event loop: synchronous calls with retries and one-line errors.

    The client is asyncio-based; the job is not. Each Connection owns one event loop and runs every request on
    it, so the asyncio machinery never leaks out of registry.py and no global loop patching (nest_asyncio) is
    needed.
    """

    def __init__(self, configuration: Configuration, address: str, token_sent: bool,
                 retry: Policy = RetryPolicy()):
        self.configuration = configuration
        self.address = address      # the server's base URL, for messages
        self.token_sent = token_sent
        self.retry = retry
        self.loop = asyncio.new_event_loop()
        self.client: PrefixedApiClient | None = None
        self._deprecation_warned = False
        self._lock = threading.RLock()

    @property
    def api_version(self) -> str:
        assert self.client is not None
        return self.client.api_version

    @property
    def api(self) -> ModelRegistryServiceApi:
        assert self.client is not None
        return ModelRegistryServiceApi(self.client)

    def use(self, api_version: str) -> None:
        self._close_client()
        self.client = PrefixedApiClient(self.configuration, api_version, self._deprecated)

    def call(self, what: str, make: Callable[[ModelRegistryServiceApi], Awaitable[T]]) -> T:
        """Run ``make(api)`` with retries; ``what`` names the request in errors ("get model artifact 7")."""
        return self._with_retries(what, lambda: make(self.api))

    def call_once(self, what: str, make: Callable[[ModelRegistryServiceApi], Awaitable[T]]) -> T:
        """``make(api)`` tried once: for best-effort writes that must not hold the job up (resume.py)."""
        with self._lock:
            return self.loop.run_until_complete(self._once(what, lambda: make(self.api)))

    def probe(self, api_version: str) -> tuple[int, str]:
        """Status and body of the detection request under ``api_version``'s prefix."""
        self.use(api_version)
        client = self.client
        assert client is not None
        return self._with_retries(f"probe {prefix(api_version)}", lambda: probe(client, self.retry.timeout))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self._close_client()
        self.loop.close()

    # ------------------------------------------------------------ internals

    def _with_retries(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        with self._lock:  # the job's main thread and a pipeline's push thread (resume.py) share the one loop
            return self._call(what, make)

    def _call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        return self.retry.call(
            f"Model Registry: {what}", lambda: self.loop.run_until_complete(self._once(what, make)), logger=log,
            give_up=lambda err, tries: RegistryError(mask(f"{what}: {err} (gave up after {tries} tries)")))

    async def _once(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        try:
            return await make()
        except ApiException as err:
            raise self._api_error(what, err) from None
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as err:
            # not transient: retrying cannot make an untrusted certificate trusted
            reason = getattr(err, "certificate_error", None) or err
            raise RegistryError(mask(f"{what}: TLS to the Model Registry at {self.address} failed: {reason}; trust "
                                     f"its CA with MODEL_SYNC_REGISTRY_CUSTOM_CA (or _CUSTOM_CA_ENVVAR)")) from None
        except (TimeoutError, aiohttp.ClientConnectionError) as err:
            raise Transient(f"connection to the Model Registry at {self.address} failed: "
                            f"{type(err).__name__}: {err}".rstrip(": ")) from None
        except (OpenApiException, ValueError, TypeError) as err:
            # the client refused to send a request or could not read an answer (pydantic errors are ValueErrors)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RegistryError(mask(f"{what}: {first}")) from None

    def _api_error(self, what: str, err: ApiException) -> Exception:
        status = err.status or 0
        message = mask(server_message(err.body) or err.reason or "")
        transient = http_status(status, f"HTTP {status} {message}".strip(), (err.headers or {}).get("Retry-After"))
        if transient is not None:
            return transient
        if status in (401, 403):
            sent = "the token" if self.token_sent else "the request without a token (none configured)"
            return TokenRejected(f"Model Registry at {self.address} rejected {sent}: HTTP {status} during {what}; "
                                 "check the registry user token setting")
        text = mask(f"{what}: HTTP {status} {message}".strip())
        if status == 404 or (status == 400 and "invalid" in message and " ID" in message):
            return NotFound(text)
        if status == 409:
            return Conflict(text)
        return RegistryError(text)

    def _deprecated(self, api_version: str, sunset: str | None) -> None:
        if self._deprecation_warned:
            return
        self._deprecation_warned = True
        log.warning("Model Registry at %s marks its API %s deprecated (Sunset: %s); upgrade the server or "
                    "let modelsync use v1 when the server offers it", self.address, prefix(api_version),
                    sunset or "not announced")

    def _close_client(self) -> None:
        if self.client is not None:
            self.loop.run_until_complete(self.client.close())  # type: ignore[no-untyped-call]  # unannotated
            self.client = None


def server_message(body: str | None) -> str:
    """The ``message`` of the server's JSON error body, else the body's first line."""
    if not body:
        return ""
    try:
        doc = json.loads(body)
    except ValueError:
        return body.strip().splitlines()[0] if body.strip() else ""
    return str(doc.get("message", "")) if isinstance(doc, dict) else ""


def detect(connection: Connection, forced: str = "auto") -> str:
    """Choose the API generation (probing unless ``forced``) and leave ``connection`` using it; on any error
    the connection is closed."""
    if forced not in ("auto", *API_VERSIONS):
        connection.close()
        raise RegistryError(f"unknown registry API version {forced!r} (auto, {', '.join(API_VERSIONS)})")
    candidates = API_VERSIONS if forced == "auto" else (forced,)
    try:
        for api_version in candidates:
            status, body = connection.probe(api_version)
            if status == 404:
                continue
            if status in (401, 403):
                raise connection._api_error(f"probe {prefix(api_version)}",
                                            ApiException(status=status, reason="", body=body))
            if status == 200 and looks_like_list(body):
                return api_version
            raise RegistryError(mask(f"{connection.address}{prefix(api_version)}registered_models answered HTTP "
                                     f"{status} {server_message(body)[:200]}".rstrip() + ": not a Model Registry?"))
        tried = " and ".join(f"{prefix(v)}registered_models" for v in candidates)
        forced_note = f" (API version forced to {forced})" if forced != "auto" else ""
        raise RegistryError(f"no Model Registry API at {connection.address}: {tried} answered 404{forced_note}")
    except BaseException:
        connection.close()
        raise
