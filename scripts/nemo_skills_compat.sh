#!/usr/bin/env bash
# Run NeMo-Skills' own sandbox test suite (tests/test_code_execution.py, unchanged) against
# `tir-agent sandbox serve` and, for comparison, against NeMo-Skills' own local_sandbox_server.py,
# and print which tests pass against each. This is issue #11's acceptance measure.
#
# Not part of CI: it needs a checkout of NeMo-Skills (a bare mirror or a directory) and a venv
# with their client's dependencies, neither of which CI has.
#
# Usage: scripts/nemo_skills_compat.sh [ours|theirs|both] [extra pytest args, e.g. -k ipython]
# Environment:
#   NEMO_SKILLS_SRC   their source tree (default /tmp/nemo-skills; extracted from NEMO_SKILLS_GIT
#                     when missing)
#   NEMO_SKILLS_GIT   bare git mirror (default /work/.mirror/NVIDIA+NeMo-Skills/repo)
#   NEMO_VENV         venv for their client, tests and server (default /tmp/nemo-venv; created
#                     when missing; never the system Python)
#   OURS_PORT, THEIRS_PORT   ports of the two servers (default 6102 and 6101)
#   OUT               where junit XML and server logs go (default /tmp/nemo-compat)
# Run from the tir-agent checkout; ours runs with PYTHONPATH set to it.
set -euo pipefail

which_servers=${1:-both}
shift || true
repo_root=$(cd "$(dirname "$0")/.." && pwd)
src=${NEMO_SKILLS_SRC:-/tmp/nemo-skills}
git_dir=${NEMO_SKILLS_GIT:-/work/.mirror/NVIDIA+NeMo-Skills/repo}
venv=${NEMO_VENV:-/tmp/nemo-venv}
ours_port=${OURS_PORT:-6102}
theirs_port=${THEIRS_PORT:-6101}
out=${OUT:-/tmp/nemo-compat}
mkdir -p "$out"

if [ ! -f "$src/tests/test_code_execution.py" ]; then
    mkdir -p "$src"
    git --git-dir="$git_dir" archive HEAD | tar -x -C "$src"
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    # What their client, test module, conftest and server import (their requirements/main.txt
    # minus what these never touch), plus numpy/sympy that their few-shot examples import.
    # leptonai is pinned because nemo_run (imported through nemo_skills.dataset) needs its
    # api.v1, which newer releases dropped.
    "$venv/bin/pip" install -q pytest pytest-asyncio httpx flask ipython psutil fire rich docker \
        pyyaml 'math-verify[antlr4_9_3]' nemo_run 'leptonai==0.26.6' numpy sympy
fi

# Each server runs in its own process group (setsid), stopped as a group: their server forks a
# shell process per session, and those children keep the listening socket open if left behind.
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

port_free() {
    python3 -c "import socket, sys; socket.socket().bind(('127.0.0.1', int(sys.argv[1])))" "$1" \
        2>/dev/null || { echo "port $1 is in use (a server left over?): free it or set the port" >&2; exit 1; }
}

wait_healthy() {
    for _ in $(seq 60); do
        curl -sf --max-time 2 "http://127.0.0.1:$1/health" >/dev/null && return 0
        sleep 1
    done
    echo "server on port $1 did not become healthy" >&2
    return 1
}

run_suite() { # name port
    echo "== NeMo-Skills tests/test_code_execution.py against $1 (port $2)"
    (cd "$src" && NEMO_SKILLS_SANDBOX_PORT=$2 "$venv/bin/python" -m pytest -p no:cacheprovider \
        tests/test_code_execution.py -q -rA --junitxml="$out/$1.xml" "${@:3}" 2>&1 |
        grep -E '^(PASSED|FAILED|ERROR) |^[0-9]+ (passed|failed)|^=+ .*(passed|failed)') || true
}

if [ "$which_servers" = theirs ] || [ "$which_servers" = both ]; then
    port_free "$theirs_port"
    # Their server (one worker, Flask's threaded server), in the venv's Python.
    (cd "$src/nemo_skills/code_execution/local_sandbox" && WORKER_NUM=0 exec setsid "$venv/bin/python" \
        -c "import local_sandbox_server as s; s.app.run(host='127.0.0.1', port=$theirs_port, threaded=True)" \
        >"$out/theirs.log" 2>&1) &
    pids+=($!)
    wait_healthy "$theirs_port"
    run_suite theirs "$theirs_port" "$@"
fi
if [ "$which_servers" = ours ] || [ "$which_servers" = both ]; then
    port_free "$ours_port"
    (cd "$repo_root" && PYTHONPATH=$repo_root exec setsid python3 -m tir_agent.service \
        --port "$ours_port" 'preload=[numpy, sympy]' >"$out/ours.log" 2>&1) &
    pids+=($!)
    wait_healthy "$ours_port"
    run_suite ours "$ours_port" "$@"
fi
