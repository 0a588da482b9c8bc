# ditr in a container: CPU by default; docs/install.md#docker.
#
#   docker build -t ditr .
#   docker run --rm -v "$PWD:/data" ditr demo --quick --out demo_out
#
# CUDA: a CUDA base image and the CUDA build of torch (the build has no GPU to detect), run with --gpus all:
#
#   docker build -t ditr:cuda --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#       --build-arg TORCH_BUILD=cuda .
#   docker run --rm --gpus all -v "$PWD:/data" ditr:cuda predict MODEL SCENE --out pred
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

# torch as scripts/install_torch.py decides (auto | cpu | cuda), or from TORCH_INDEX when set
ARG TORCH_VERSION=2.13.0
ARG TORCH_BUILD=cpu
ARG TORCH_INDEX=
# extras of pyproject.toml, e.g. "scans" or "scans,waymo"
ARG EXTRAS=

# HF_HOME: the Hugging Face cache (published models, VFM weights), a volume to mount; MPLCONFIGDIR:
# writable under any --user.
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    HF_HOME=/cache/huggingface MPLCONFIGDIR=/tmp/matplotlib

# python:*-slim has Python; a CUDA (Ubuntu) base gets the distribution's Python 3 with venv (two
# words, split on purpose). Package versions follow the base image, so they are not pinned here.
# hadolint ignore=DL3008,DL3013,SC2046
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
        $(command -v python3 >/dev/null || echo python3 python3-venv) \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p "$HF_HOME" && chmod 1777 "$HF_HOME" \
 && python3 -m venv "$VIRTUAL_ENV" \
 && python -m pip install --upgrade pip

# torch first, in its own layer: it outlives changes to ditr's sources
COPY scripts/install_torch.py /tmp/install_torch.py
RUN python /tmp/install_torch.py --torch-version "$TORCH_VERSION" --build "$TORCH_BUILD" \
        ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} \
 && rm /tmp/install_torch.py

WORKDIR /opt/ditr
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# hadolint ignore=DL3013
RUN python -m pip install ".${EXTRAS:+[$EXTRAS]}" \
 && ditr --version

WORKDIR /data
ENTRYPOINT ["ditr"]
CMD ["--help"]
