"""Loading models: device, threads, quiet loading, offline hub fallback, one clear load error.

Model names accept a hub id or a local directory; the device is CUDA when present.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from rag.errors import ModelLoadError

logger = logging.getLogger(__name__)


def configure_threads(settings: Any) -> None:
    """Apply `torch_threads` when set (> 0); else torch's default (one thread per physical core)."""
    threads = int(settings.torch_threads or 0)
    if threads > 0:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def thread_count() -> int:
    """The intra-op threads this thread's torch operations run on."""
    import torch

    return int(torch.get_num_threads())


_THREADS_LOCK = threading.Lock()  # one `use_threads_here` at a time


def use_threads_here(threads: int) -> None:
    """Run this thread's torch operations on `threads` intra-op threads, others' as they were.

    `torch.set_num_threads` sets the calling thread's count and also the count that threads
    starting later take; that one is read before, and put back after, from short-lived helper
    threads (a new thread starts with it). One caller at a time: two encoders' workers start
    together, and interleaved, the second would read the first's count as the default.
    """
    import torch

    if threads <= 0 or threads == torch.get_num_threads():
        return
    with _THREADS_LOCK:
        default = _in_a_new_thread(torch.get_num_threads)
        torch.set_num_threads(threads)
        _in_a_new_thread(lambda: torch.set_num_threads(default))



def _in_a_new_thread(fn: Any) -> Any:
    """fn() run in a thread of its own (joined), and its result."""
    out: list = []
    helper = threading.Thread(target=lambda: out.append(fn()), name="rag-thread-default")
    helper.start()
    helper.join()
    return out[0]


def split_threads(ways: int, configured: int = 0) -> int:
    """Intra-op threads for each of `ways` encoders that run at once: `configured` when set,
    else torch's thread count divided between them (at least 1). Two encoders with torch's 2
    threads each on 2 cores fight over them (docs/benchmarks.md)."""
    if configured > 0:
        return configured
    import torch

    return max(1, torch.get_num_threads() // max(1, ways))


def quiet_model_loading() -> None:
    """Silence per-load progress bars and deprecation chatter from transformers."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)


_HUB_CHECKED = False


def prefer_local_files(name: str, host: str = "huggingface.co", timeout: float = 3.0) -> None:
    """For a hub id with no route to the hub, switch the hub client to offline mode.

    Cached models still load; missing ones fail in seconds instead of after minutes of retries.
    """
    global _HUB_CHECKED
    if _HUB_CHECKED or Path(name).exists() or os.environ.get("HF_HUB_OFFLINE"):
        return
    import socket

    _HUB_CHECKED = True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        logger.info("%s is unreachable: loading models from local files only", host)
        import huggingface_hub.constants

        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True  # read once at import time


def resolve_device(device: str = "auto") -> str:
    """`auto` -> `cuda` when a GPU is visible, else `cpu`; anything else passes through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def describe_load_failure(kind: str, name: str, env: str, exc: Exception) -> ModelLoadError:
    """One message for any loader failure: what was asked, why it failed, which variable fixes it."""
    if Path(name).exists():
        reason = f"the folder exists but does not hold a usable model ({type(exc).__name__}: {exc})"
    else:
        reason = (
            "it is not a local folder and could not be fetched from the Hugging Face hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        )
    return ModelLoadError(
        f"cannot load the {kind} model {name!r}: {reason}. "
        f"Set {env} to a local model folder, or make the hub reachable."
    )
