"""Reading the stack's Model Registry with plain HTTP (v1alpha3), independently of the code under test: one
resource (mr_get), whether a model is registered, the one artifact of a model's version, and Inspect (a reader
with its own opener that bypasses proxies, and one_live_set: exactly one LIVE model/version/artifact)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def mr_get(stack, path: str) -> dict:
    with urllib.request.urlopen(f"{stack.mr_url}/api/model_registry/v1alpha3/{path}", timeout=10) as resp:
        return json.load(resp)


def registered(stack, name: str) -> bool:
    try:
        mr_get(stack, f"registered_model?name={name}")
        return True
    except urllib.error.HTTPError as err:
        assert err.code == 404
        return False


def the_artifact(stack, name: str, version: str = "1.0.0") -> dict:
    rm = mr_get(stack, f"registered_model?name={name}")
    mv = mr_get(stack, f"model_version?name={version}&parentResourceId={rm['id']}")
    (art,) = mr_get(stack, f"model_versions/{mv['id']}/artifacts")["items"]
    return art


class Inspect:
    """Plain HTTP to the server itself (v1alpha3), for checking what the code under test did."""

    def __init__(self, url: str):
        self.base = url + "/api/model_registry/v1alpha3"
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def req(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with self.opener.open(request, timeout=10) as resp:
            return json.loads(resp.read())

    def items(self, path: str) -> list[dict]:
        return self.req("GET", path)["items"]

    def model_by_name(self, name: str) -> dict:
        return self.req("GET", f"/registered_model?name={name}")

    def one_live_set(self, model_name: str, version_name: str) -> dict:
        """Assert exactly one model/version/model artifact, LIVE; return the artifact."""
        model = self.model_by_name(model_name)
        versions = self.items(f"/registered_models/{model['id']}/versions")
        assert [v["name"] for v in versions] == [version_name]
        artifacts = self.items(f"/model_versions/{versions[0]['id']}/artifacts")
        assert len(artifacts) == 1 and artifacts[0]["state"] == "LIVE", artifacts
        return artifacts[0]
