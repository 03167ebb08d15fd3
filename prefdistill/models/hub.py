"""Is the Hugging Face hub reachable? Answered fast, once per process.

Without network and without ``HF_HUB_OFFLINE=1``, ``from_pretrained(hub_id)`` spends ~23 s in
huggingface_hub's retry loop (5 retries with back-off, measured here) before it fails. So before
touching a hub id we check ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` and otherwise send one
``HEAD`` to the endpoint (3 s timeout, no retries; ~0.1 s when DNS fails). When it fails, callers load
with ``local_files_only=True``, which fails (or succeeds from the cache) in milliseconds.
"""

from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "on", "yes", "true"}


def offline_mode() -> bool:
    """True when the user asked for offline mode (read now, not at huggingface_hub import)."""
    return any(
        os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@functools.lru_cache(maxsize=4)
def _probe(endpoint: str, timeout: float) -> bool:
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=timeout)
    except Exception as err:  # any transport error means "not reachable"
        log.info("Hub %s unreachable (%s: %s)", endpoint, type(err).__name__, err)
        return False
    return True


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """False in offline mode or when a single HEAD to the hub endpoint fails (cached per process)."""
    if offline_mode():
        return False
    from huggingface_hub import constants

    return _probe(constants.ENDPOINT, timeout)
