"""The local test stack for modelsync (see e2e/stack.py) and its Model Registry proxy (e2e/mrproxy.py)."""
