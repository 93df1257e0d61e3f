"""The local test stack for modelsync (composed in e2e/stack.py, one module per component) and its Model Registry
proxy (e2e/mrproxy.py)."""
