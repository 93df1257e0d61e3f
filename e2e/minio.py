"""MinIO in the local stack: the S3 server, its bucket, and its trust of the stack's OIDC issuer.

    minio   MinIO S3 server, bucket ``models`` created on up        GET /minio/health/live = 200

Data in DIR/minio; the console listens on a second port (``minio_console``), the browser is off. MinIO trusts the
issuer of e2e/oidc_issuer.py for AssumeRoleWithWebIdentity: tokens with aud = its OpenID client id
(``sts.amazonaws.com``) get the role policy readwrite. It reads the issuer's discovery and keys when it starts, so
the issuer has to be up first. The root user and password go through the environment, never the command line.

env:
    MINIO_ENDPOINT          http://127.0.0.1:P
    MINIO_ACCESS_KEY, MINIO_SECRET_KEY, MINIO_BUCKET (= models)
trust_env (the audience and role of MinIO's trust in the issuer):
    OIDC_STS_AUDIENCE       sts.amazonaws.com: the audience MinIO accepts (its OpenID client id)
    OIDC_ROLE_ARN           the role ARN MinIO gives web-identity callers (AWS_ROLE_ARN)
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from collections.abc import Mapping

from e2e import oidc_issuer
from e2e.component import Site, StackError, find_tool, http_status

COMPONENTS = ("minio",)
EXTRA_PORTS = ("minio_console",)
TOOLS = {"minio": ("minio", "aws")}
DIRS = ("minio",)
BUCKET = "models"
OIDC_CLIENT_ID = "sts.amazonaws.com"  # = e2e.oidc.STS_AUDIENCE (not imported: that module needs cryptography)


def user(site: Site) -> str:
    return site.secret("minio-user", 8)  # MinIO caps access keys at 20 characters


def password(site: Site) -> str:
    return site.secret("minio-password")


def start(site: Site) -> None:
    """Start MinIO and create the bucket; the stack's OIDC issuer must already answer."""
    data = site.dir / "minio"
    env = {"MINIO_ROOT_USER": user(site),
           "MINIO_ROOT_PASSWORD": password(site),
           "MINIO_BROWSER": "off", "MINIO_UPDATE": "off",
           # AssumeRoleWithWebIdentity for tokens of the stack's issuer with aud = the client id
           "MINIO_IDENTITY_OPENID_CONFIG_URL": oidc_issuer.discovery_url(site.ports["oidc"]),
           "MINIO_IDENTITY_OPENID_CLIENT_ID": OIDC_CLIENT_ID,
           "MINIO_IDENTITY_OPENID_ROLE_POLICY": "readwrite"}
    site.spawn("minio", [find_tool("minio"), "server", str(data / "data"), "--quiet",
                         "--address", f"127.0.0.1:{site.ports['minio']}",
                         "--console-address", f"127.0.0.1:{site.ports['minio_console']}",
                         "--certs-dir", str(data / "certs")], env)
    site.wait_healthy("minio")
    _create_bucket(site)


def _create_bucket(site: Site) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": user(site),
           "AWS_SECRET_ACCESS_KEY": password(site), "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    run = subprocess.run([find_tool("aws"), "s3api", "create-bucket", "--bucket", BUCKET,
                          "--endpoint-url", f"http://127.0.0.1:{site.ports['minio']}"],
                         env=env, capture_output=True, text=True)
    if run.returncode != 0 and "BucketAlreadyOwnedByYou" not in run.stderr:
        raise StackError(f"create bucket {BUCKET}: {run.stderr.strip()}")


def healthy(site: Site, name: str, port: int) -> bool:
    return http_status(f"http://127.0.0.1:{port}/minio/health/live") == 200


def env(site: Site, port: Mapping[str, int]) -> dict[str, str]:
    return {
        "MINIO_ENDPOINT": f"http://127.0.0.1:{port['minio']}",
        "MINIO_ACCESS_KEY": user(site),
        "MINIO_SECRET_KEY": password(site),
        "MINIO_BUCKET": BUCKET,
    }


def trust_env(site: Site, port: Mapping[str, int]) -> dict[str, str]:
    return {
        "OIDC_STS_AUDIENCE": OIDC_CLIENT_ID,
        "OIDC_ROLE_ARN": oidc_role_arn(OIDC_CLIENT_ID),
    }


def oidc_role_arn(client_id: str) -> str:
    """The role ARN MinIO gives an OpenID provider in role-policy mode (it logs it at start): stable per client id."""
    digest = base64.urlsafe_b64encode(hashlib.sha1(client_id.encode()).digest()).rstrip(b"=").decode()
    return f"arn:minio:iam:::role/{digest}"
