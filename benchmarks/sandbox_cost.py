"""Where a batch sample's sandbox time goes (issue #14): sessions of one cell, by process.

Runs ``-n`` sessions of ``LocalSandbox`` at ``--concurrency``, each one opened, given the cell of
``benchmarks/batch.py`` (``print(6 * 7)``) and closed, as ``tir-agent generate`` does per sample,
and reports the CPU per session of

- the host process (this one: the event loop, the sandbox's host side),
- the whole sandbox (a cpuacct cgroup around this process, less its own time),
- the template itself (its own ``/proc/PID/stat`` before and after the run), and
- with ``--perf FILE``, every process group (host, template, supervisors, holders and runners,
  kernel threads) and what each spends its time on (system call or fault: fork, exit, page
  faults, ``rmdir`` of cgroups, ``unshare`` ...), from ``perf record -a -g`` of the run and the
  fork events in it (the process tree is rebuilt from them).

Variants: ``--fast`` (``protect_state=False``), ``--watchdog``
(``memory_enforcement='watchdog'``), ``--no-preload``, ``--reuse`` (sessions taken from
a ``SessionPool``, reset between uses), ``--fork-ahead`` (``fork_ahead=True``: a runner is
forked after each cell for a next one; by default not, as ``tir-agent generate`` does).

Run: ``python benchmarks/sandbox_cost.py -n 300 --perf /tmp/cost.data`` (root, ``perf``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

CPUACCT = Path("/sys/fs/cgroup/cpuacct")
TICK = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def own_cpu_cgroup() -> Iterator[Path | None]:
    """Move this process into a fresh cpuacct cgroup (v1) for the run; None where we cannot."""
    group = CPUACCT / f"tir-cost-{os.getpid()}"
    try:
        group.mkdir()
        for pid in [os.getpid(), *descendants(os.getpid())]:  # (children follow their parent)
            with contextlib.suppress(OSError):
                (group / "cgroup.procs").write_text(str(pid))
    except OSError:
        yield None
        return
    try:
        yield group
    finally:
        with contextlib.suppress(OSError):
            for pid in [os.getpid(), *descendants(os.getpid())]:
                with contextlib.suppress(OSError):
                    (CPUACCT / "cgroup.procs").write_text(str(pid))
            deadline = time.monotonic() + 10
            while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.05)
            group.rmdir()


def stat_times(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of ``pid``."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def descendants(root: int) -> list[int]:
    """``root``'s descendants, parents before children."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    children = [int(c) for c in (task / "children").read_text().split()]
                    found += children
                    todo += children
    return found


async def run(args: argparse.Namespace) -> None:
    from tir_agent.sandbox.local import LocalSandbox, LocalSession
    from tir_agent.sandbox.pool import SessionPool

    options: dict[str, object] = {"max_sessions": args.concurrency}
    if args.fast:
        options["protect_state"] = False
    if args.watchdog:
        options["memory_enforcement"] = "watchdog"
    if args.no_preload:
        options["preload"] = ()
    options["fork_ahead"] = args.fork_ahead
    async with LocalSandbox(**options) as box:  # type: ignore[arg-type]
        template = box.template_pid
        assert template is not None
        pool = SessionPool(box, args.concurrency) if args.reuse else None
        resets: list[float] = []
        if pool is not None:
            reset = LocalSession.reset

            async def timed(self: LocalSession) -> None:
                started = time.perf_counter()
                await reset(self)
                resets.append(time.perf_counter() - started)

            LocalSession.reset = timed  # type: ignore[method-assign]

        async def one() -> None:
            if pool is not None:
                async with pool.session() as s:
                    r = await s.run("print(6 * 7)")
            else:
                async with box.session() as s:
                    r = await s.run("print(6 * 7)")
            assert r.stdout == "42\n", r

        # warm up (spares forked, first sessions), then measure
        await asyncio.gather(*(one() for _ in range(args.concurrency)))
        await asyncio.sleep(1.0)
        perf = None
        if args.perf:
            roots = initial_roles(os.getpid(), template)
            perf = subprocess.Popen(
                ["perf", "record", "-q", "-a", "-g", "-e", "cpu-clock", "-F", "999", "-o",
                 args.perf], stderr=subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(1.0)  # perf's start (a busy core) before the window
        with own_cpu_cgroup() as group:
            usage0 = int((group / "cpuacct.usage").read_text()) if group else 0
            host0 = os.times()
            t_own0, t_children0 = stat_times(template)
            started = time.perf_counter()
            queue = list(range(args.n))

            async def worker() -> None:
                while queue:
                    queue.pop()
                    await one()

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            wall = time.perf_counter() - started
            if resets:
                resets.sort()
                print(
                    f"reset: median {1e3 * resets[len(resets) // 2]:.1f} ms, p90 "
                    f"{1e3 * resets[len(resets) * 9 // 10]:.1f} ms",
                    flush=True,
                )
            await asyncio.sleep(0.5)  # the last sessions' processes on their way out
            t_own1, t_children1 = stat_times(template)
            host1 = os.times()
            usage1 = int((group / "cpuacct.usage").read_text()) if group else 0
        if perf is not None:
            perf.send_signal(2)
            perf.wait()
        host = (host1.user + host1.system) - (host0.user + host0.system)
        total = (usage1 - usage0) / 1e9
        n = args.n
        print(
            f"{n} sessions, concurrency {args.concurrency}: {n / wall:.1f} sessions/s; CPU ms per "
            f"session: host {1e3 * host / n:.1f}, sandbox {1e3 * (total - host) / n:.1f} (template "
            f"itself {1e3 * (t_own1 - t_own0) / n:.1f}, sessions reaped by it "
            f"{1e3 * (t_children1 - t_children0) / n:.1f}); load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        if perf is not None:
            Path(args.perf + ".roles.json").write_text(json.dumps([roots, n]))
            analyse(args.perf, roots, n)


# -- perf: who spends the time on what ---------------------------------------------------------

CATEGORIES = [
    # (label, kernel functions: the first one found in a sample's stack, leaf first, decides)
    ("fork (copying page tables)", ("copy_page_range", "dup_mmap", "copy_process")),
    ("exit/exec (tearing down memory)", ("exit_mmap", "unmap_vmas", "do_exit", "mmput")),
    ("page faults", ("asm_exc_page_fault", "do_user_addr_fault", "handle_mm_fault")),
    ("cgroup mkdir/rmdir/attach", ("cgroup_mkdir", "cgroup_rmdir", "cgroup_attach_task",
                                   "cgroup1_procs_write", "mem_cgroup_css_offline",
                                   "css_killed_work_fn", "css_free_rwork_fn",
                                   "mem_cgroup_css_alloc", "mem_cgroup_css_free")),
    ("namespaces (unshare, mount, teardown)", ("ksys_unshare", "__x64_sys_unshare",
                                               "__x64_sys_mount", "path_mount", "free_ipc",
                                               "put_mnt_ns", "cleanup_mnt", "free_ipc_work",
                                               "__x64_sys_umount", "do_mount")),
    ("munmap/mmap/brk", ("__x64_sys_munmap", "__x64_sys_mmap", "__x64_sys_brk",
                         "__vm_munmap", "do_mmap")),
    ("wait/kill/signals", ("__x64_sys_kill", "__x64_sys_wait4", "__x64_sys_waitid",
                           "do_signal", "arch_do_signal_or_restart", "__x64_sys_pidfd_open")),
    ("sockets/pipes/poll", ("__x64_sys_sendmsg", "__x64_sys_recvmsg", "__x64_sys_write",
                            "__x64_sys_read", "__x64_sys_poll", "__x64_sys_epoll_wait",
                            "__x64_sys_sendto", "__x64_sys_recvfrom", "do_sys_poll",
                            "__x64_sys_select", "__x64_sys_pselect6", "__x64_sys_ppoll")),
    ("/proc reads, open/close, other syscalls", ("entry_SYSCALL_64", "do_syscall_64")),
    ("scheduler, interrupts", ("schedule", "irq_exit_rcu", "asm_sysvec_apic_timer_interrupt",
                               "__schedule", "finish_task_switch")),
]  # fmt: skip

FORK = re.compile(r"PERF_RECORD_FORK\((\d+):(\d+)\):\((\d+):(\d+)\)")
SAMPLE = re.compile(r"^\s*(.*?)\s+(\d+)/(\d+)\s+cpu-clock")
EXEC_COMM = re.compile(r"PERF_RECORD_COMM exec: (\S+):(\d+)/(\d+)")


def categorize(stack: list[str]) -> str:
    """The category of a sample by its kernel functions (leaf first); user code if none."""
    names = set(stack)
    for label, funcs in CATEGORIES:
        if names.intersection(funcs):
            return label
    if any(s.startswith(("__x64_sys_", "do_syscall")) for s in stack):
        return "/proc reads, open/close, other syscalls"
    return "other kernel" if stack else "user space"


def initial_roles(host: int, template: int) -> dict[int, str]:
    """Roles of the processes alive now: this host, the template, and below it."""
    roles = {host: "host", template: "template"}
    todo = [(template, "template")]
    below = {"template": "supervisor", "supervisor": "holder/runner"}
    while todo:
        pid, r = todo.pop()
        with contextlib.suppress(OSError):
            for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
                roles[int(c)] = below.get(r, "holder/runner")
                todo.append((int(c), roles[int(c)]))
    return roles


def analyse(data: str, initial: dict[int, str], n: int) -> None:
    """Print CPU ms per session by process group and category from ``perf script`` output."""
    text = subprocess.run(
        ["perf", "script", "-i", data, "--show-task-events", "-F", "comm,pid,tid,event,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    parent: dict[int, int] = {}
    comm: dict[int, str] = {}
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    samples_total = 0
    period_ms = 0.0
    roles = dict(initial)

    def role(pid: int) -> str | None:
        if pid in roles:
            return roles[pid]
        up = parent.get(pid)
        if up is None or up == pid:
            return None
        above = role(up)
        if above is None:
            return None
        if above in ("host", "bwrap") and comm.get(pid, "").startswith("bwrap"):
            r = "bwrap"
        elif above in ("host", "bwrap"):
            r = "template" if comm.get(pid, "").startswith("python") else "host child"
        else:
            r = {
                "template": "supervisor",
                "supervisor": "holder/runner",
                "holder/runner": "holder/runner",
            }.get(above, above)
        roles[pid] = r
        return r

    blocks = text.split("\n\n")
    for block in blocks:
        lines = [x for x in block.splitlines() if x.strip()]
        for line in lines:
            m = FORK.search(line)
            if m:
                child, _, up, _ = (int(x) for x in m.groups())
                if child != up:  # a new process, not a thread
                    parent.setdefault(child, up)
            e = EXEC_COMM.search(line)
            if e:
                comm[int(e.group(2))] = e.group(1)
        if not lines or "cpu-clock" not in lines[0]:
            continue
        m = SAMPLE.match(lines[0])
        if m is None:
            continue
        name, pid = m.group(1), int(m.group(2))
        samples_total += 1
        stack = [x.split()[1] for x in lines[1:] if "kernel.kallsyms" in x]
        if name.startswith("kworker") or pid == 0:
            group = "kernel threads" if pid else "idle"
        else:
            group = role(pid) or "other processes (not ours)"
        counts[(group, categorize(stack))] += 1
    # cpu-clock at the default frequency: each sample is 1/F s; perf records F in the header
    header = subprocess.run(
        ["perf", "report", "-i", data, "--header-only"], capture_output=True, text=True
    ).stdout
    freq = re.search(r"sample_freq[^0-9]*(\d+)", header)
    period_ms = 1e3 / int(freq.group(1)) if freq else 0.25
    by_group: collections.Counter[str] = collections.Counter()
    for (group, _), count in counts.items():
        by_group[group] += count
    print(f"\nperf: {samples_total} samples, {period_ms:.2f} ms each; CPU ms per session:")
    for group, count in by_group.most_common():
        if group == "idle":
            continue
        print(f"  {group:30s} {count * period_ms / n:7.2f}")
        for (g, category), c in counts.most_common():
            if g == group and c * period_ms / n >= 0.1:
                print(f"      {category:42s} {c * period_ms / n:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fast", action="store_true", help="protect_state=False")
    parser.add_argument("--watchdog", action="store_true", help="memory_enforcement='watchdog'")
    parser.add_argument("--no-preload", action="store_true", help="preload=()")
    parser.add_argument(
        "--reuse", action="store_true", help="sessions from a SessionPool, reset between uses"
    )
    parser.add_argument(
        "--fork-ahead", action="store_true", help="fork_ahead=True (generate: False)"
    )
    parser.add_argument("--perf", metavar="FILE", help="record with perf and break it down")
    parser.add_argument("--analyse", metavar="FILE", help="break down a --perf FILE again")
    args = parser.parse_args()
    if args.analyse:
        roots, n = json.loads(Path(args.analyse + ".roles.json").read_text())
        analyse(args.analyse, {int(k): v for k, v in roots.items()}, n)
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
