# syntax=docker/dockerfile:1
# The image k8s/ runs: Ray's own image, then torch, then this project (with its sample data, at /app).
#   docker build -t rayformers:0.1.0-cpu .                          # VARIANT=cpu: CPU-only torch
#   docker build --build-arg VARIANT=gpu -t rayformers:0.1.0-gpu .  # Ray's CUDA image, CUDA torch
# Tags are <project version>-<VARIANT>; the k8s overlays name them, and tests/unit/test_k8s.py checks that the
# versions and variants here, in the manifests, in pyproject.toml and in the Makefile agree.
# PLATFORM: push to your registry and set it in k8s/overlays/*/kustomization.yaml (`images:`).

# The Ray in the image must be the Ray the manifests declare (rayVersion) and the project requires.
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
# cpu or gpu: Ray's base image (rayproject/ray:<version>-<python>-<variant>) and the torch build.
ARG VARIANT=cpu

FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}

ARG VARIANT
ARG TORCH_VERSION=2.13.0
# Where torch comes from. Empty: by VARIANT, PyTorch's CPU wheels for cpu, pip's default index (the CUDA
# build) for gpu. PLATFORM: e.g. --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128, or a mirror.
ARG TORCH_INDEX=

# Torch first, alone and pinned: the project's install below then finds `torch>=...` satisfied, so pip never
# swaps in another build (a multi-GB CUDA torch in a CPU image).
RUN case "${VARIANT}" in \
      cpu) index="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" ;; \
      gpu) index="${TORCH_INDEX}" ;; \
      *) echo "VARIANT must be cpu or gpu, not '${VARIANT}'" >&2; exit 1 ;; \
    esac \
 && pip install --no-cache-dir "torch==${TORCH_VERSION}" ${index:+--index-url "${index}"} \
 && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# /app holds the project; run.yaml in k8s/base reads its sample data and tokenizer from /app/data/samples.
USER root
RUN mkdir -p /app && chown ray:users /app
USER ray
WORKDIR /app
COPY --chown=ray:users . /app
# A wheel install, not an editable one: the image runs the installed `rayformers.*` namespace. /app holds
# the repository's own data/, training/, ... folders, like any user's project directory: the check below
# fails the build if anything made a top-level `data`, `training`, `serving` or `cluster` importable
# outside /app, or if rayformers could not import its stages from site-packages.
RUN pip install --no-cache-dir . \
 && rm -rf build \
 && rayformers --help > /dev/null \
 && cd / && python -c "import importlib.util as u, rayformers.data.pipeline, rayformers.serving.app; \
s = [m for m in ('data', 'training', 'serving', 'cluster') if u.find_spec(m)]; \
assert not s, f'top-level stage packages are installed: {s}'"
