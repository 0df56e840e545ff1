//! The official `anthropic` Python SDK through the proxy (see `tests/python/sdk_check.py`).
