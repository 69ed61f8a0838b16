"""A minimal template process for the isolation tests, run INSIDE the sandbox via ``-c``.

It speaks JSON lines on stdin/stdout. Each request forks a child that calls the real
``confine_session`` and then runs the request's code with a dict ``out`` in scope; the child
reports ``out`` through a pipe. Afterwards the template kills the session uid with the real
``kill_uid`` and removes the work dir with the real ``remove_workdir`` (unless asked to keep it).
"""

import json
import os
import select
import sys
import time
import traceback

sys.path.insert(0, sys.argv[1])  # the directory holding the tir_agent package

from tir_agent.sandbox import isolation
from tir_agent.sandbox.config import SandboxConfig

protections = isolation.Protections.from_dict(json.loads(sys.argv[2]))
base_config = SandboxConfig.model_validate(json.loads(sys.argv[3]))
isolation.prepare_template(base_config, protections)
control_fds = os.pipe()  # stands for the engine's control channel, which sessions must not inherit


def serve(request):
    config = base_config.model_copy(update=request.get("config", {}))
    slot = request.get("slot", 0)
    uid = isolation.session_uid(slot, protections)
    workdir = os.path.join(protections.workspace_root, f"s{slot}")
    if request.get("cleanup_only"):
        killed = isolation.kill_uid(uid)
        isolation.remove_workdir(workdir)
        return {"killed": killed, "workdir_left": os.path.lexists(workdir)}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        out = {}
        try:
            t = time.perf_counter()
            keep = [w] if request.get("close_fds") else None
            if request.get("session_ns"):  # as a spare holder does before its assignment
                isolation.prepare_session(config, protections)
            isolation.confine_session(config, protections, uid=uid, workdir=workdir, keep_fds=keep)
            out["report_fd"] = w
            out["control_fds"] = list(control_fds)
            out["confine_ms"] = (time.perf_counter() - t) * 1000
            exec(request["code"], {"out": out, "__name__": "__cell__"})
        except BaseException as e:  # the report must get out whatever the code did
            out["error"] = "".join(traceback.format_exception_only(type(e), e)).strip()
        os.write(w, json.dumps(out, default=repr).encode() + b"\n")
        os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + request.get("timeout", 20)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        data = os.read(r, 65536)
        if not data:
            break
        chunks.append(data)
        if data.endswith(b"\n"):  # the report is complete (forked children may hold the pipe)
            break
    os.close(r)
    t = time.perf_counter()
    left_before = len(isolation.pids_of_uid(uid))
    killed = isolation.kill_uid(uid)
    kill_ms = (time.perf_counter() - t) * 1000
    _, status = os.waitpid(pid, 0)
    left_after = len(isolation.pids_of_uid(uid))
    if not request.get("keep_workdir"):
        isolation.remove_workdir(workdir)
    raw = b"".join(chunks)
    return {
        "out": json.loads(raw) if raw else None,
        "exitcode": os.waitstatus_to_exitcode(status),
        "alive_before_kill": left_before,
        "killed": killed,
        "kill_ms": kill_ms,
        "left_after_kill": left_after,
        "workdir_left": os.path.lexists(workdir),
    }


print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
for line in sys.stdin:
    try:
        reply = serve(json.loads(line))
    except BaseException as e:
        reply = {"harness_error": "".join(traceback.format_exception(e))}
    print(json.dumps(reply), flush=True)
