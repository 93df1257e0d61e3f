"""An AWS CLI (v1) plugin, loaded by the aws child process through the config file modelsync writes for it.

botocore sends `Expect: 100-continue` on every upload. Against MinIO its 100-continue handling races: about one
upload in two stalls for the whole read timeout (60 s by default) before a retry succeeds (boto/botocore#1833,
minio/minio#11245). Dropping the header after signing (it is not a signed header) removes the stall; it only
costs re-sending a body when a store rejects a request early, e.g. on a region redirect.
"""


def drop_expect(request, **kwargs):
    """A botocore before-send handler; boto3 clients made by modelsync register it too."""
    if "Expect" in request.headers:
        del request.headers["Expect"]


def awscli_initialize(cli):
    cli.register("before-send.s3", drop_expect)
