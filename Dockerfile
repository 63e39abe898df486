# syntax=docker/dockerfile:1

# --- build: install Esoteric and its dependencies into a virtual environment ---------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/esoteric
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
COPY core ./core
COPY migrations ./migrations
RUN /opt/esoteric/bin/pip install .
# Bake Chroma's embedding model into the image so the container needs no download at start.
RUN /opt/esoteric/bin/python -c "from chromadb.utils.embedding_functions import ONNXMiniLM_L6_V2 as M; M()(['warm up'])" \
    && mkdir -p /opt/models \
    && cp -r /root/.cache/chroma/onnx_models/all-MiniLM-L6-v2 /opt/models/

# --- runtime: the virtual environment and the model, run as an unprivileged user ------------
FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/esoteric/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ESOTERIC_DATA_DIR=/data \
    ESOTERIC_EMBEDDING_MODEL_DIR=/opt/models/all-MiniLM-L6-v2 \
    ESOTERIC_HTTP_HOST=0.0.0.0 \
    ESOTERIC_HTTP_PORT=8000
RUN groupadd --system --gid 10001 esoteric \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data esoteric \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /opt/esoteric /opt/esoteric
COPY --from=build /opt/models /opt/models
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('ESOTERIC_HTTP_PORT', '8000')}/health\", timeout=4)"]
ENTRYPOINT ["esoteric"]
CMD ["serve"]
