"""Code that runs inside the sandbox: the template (zygote), session supervisors, holders and
runners. One module per process, and the pieces they share::

    template (zygote)      template.py     imports config.preload once, gc.freeze(), keeps spares
    └── supervisor S       supervisor.py   privileged, never runs user code; subreaper; answers
        │                  control.py      the host for cells it takes over, enforces the timeout
        │                  cellwatch.py    (the session's control messages; the cell it watches;
        │                  processes.py    the session's processes)
        └── holder H       holder.py       confined (own uid, rlimits, seccomp); holds the state
            └── runner C   runner.py       protect_state=True: a fork of H that runs the next
                           cells.py        cell (H runs the session's first cell itself); on
                           prefault.py     success it becomes the new holder, on timeout/crash
                                           S kills it and H forks again

Shared: ``layout.py`` (descriptor numbers and placement, timing), ``channels.py`` (the session
processes' ends of their channels), ``direct.py`` and ``token.py`` (two hops: who answers a
cell, runner or supervisor), ``output.py`` (reading the output pipes under the cap),
``verdicts.py`` (what a result says about a crash), ``procs.py`` (prctl, the process tree,
killing), ``timers.py``.

Runners read the requests straight from the session socket (shared with S) and, in both modes,
answer the host themselves (two hops, :class:`~.direct.Direct`) when their cell ends within
:data:`~.layout.TAKEOVER` without leaving processes behind; S sleeps through such a cell (in
protected mode it hears of each new runner and holder). A token pipe decides, race-free,
whether the runner or S answers each cell; S drains the output of the cells it takes over,
enforces their timeout and answers. A protected runner that waited for its cell leaves the
next one the pages it wrote, to copy while idle (``prefault.py``).

With ``protect_state=False`` the holder runs the cells itself (no fork per execution); a timeout
first raises an exception in the cell (soft interrupt), then kills the holder and S forks a fresh
one from its clean state (state lost).

User code writes to fd 1 and 2, pipes drained by S with the cap applied while reading; Python's
``sys.stdout``/``sys.stderr`` also stop writing once over the cap, so print loops stay cheap.
The host starts the template with ``template_main`` (see :data:`tir_agent.sandbox.local.BOOT`).
"""

from __future__ import annotations

from tir_agent.sandbox.worker.template import main, template_main

__all__ = ["main", "template_main"]
