"""modelsync: move a model's files between storage back-ends and register them in Kubeflow Model Registry."""

__version__ = "0.1.0"
