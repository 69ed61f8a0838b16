#!/usr/bin/env bash
# Everything tir-agent needs on a fresh Debian 12 / Python 3.11 machine (run as root, or with sudo
# available for the system packages). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bwrap >/dev/null 2>&1; then
    # bubblewrap gives the sandbox its network and file-system isolation.
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
