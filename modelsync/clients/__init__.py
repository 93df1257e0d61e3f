"""The protocol clients, below the stages and types: each speaks one service and knows nothing of settings or
jobs. `distribution` the OCI distribution API (token and Basic auth, HEAD/GET of manifests and blobs), `mr_api` the
Model Registry's REST API through its generated client (either API generation), `aws` S3 through boto3 and the aws
CLI's environment, `events` Kubernetes Events on the job's own pod. The Hugging Face Hub is reached through
huggingface_hub in sources/hf.py. All retry with retry.py's one policy and raise errors.py's exceptions."""
