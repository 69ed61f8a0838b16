"""Generation on a Ray cluster (``tir-agent generate --ray``): samples spread over Ray actors.

The driver (the ``tir-agent`` process) keeps everything that makes a run safe: it reads the input,
keeps the journal, writes the output in input order, charges the rate limits and shows progress,
exactly as a local run does (:func:`~tir_agent.batch.engine.run_batch`). Only the solving moves:
:class:`RaySolver` is the engine's solver, and it sends each job to one of the actors. Each actor
holds its own agent and sandbox and solves up to ``max_concurrent_requests`` samples at once, so
the run has ``actors x max_concurrent_requests`` samples in flight. A job goes to the actor with
the fewest jobs in flight.

Guarantees, as in a local run: a sample is in the output once (only the driver writes, once per
job); the output is in input order; after ``kill -9`` of the driver its actors die with it (Ray
ends the actors of a dead driver, and an actor's sandbox dies with the actor), and a rerun keeps
the finished samples and redoes the others once. An actor that dies mid-run is restarted by Ray
and its jobs are sent again once (``max_task_retries=1``); a job whose actor dies twice is recorded
with an ``error``, like a sample whose sandbox failed.

The cluster is ``ray.address`` (``RAY_ADDRESS``, Ray's own convention), else a new local cluster
that stops when the run ends. Ray is an optional dependency: ``pip install 'tir-agent[ray]'``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

from tir_agent._log import get_logger
from tir_agent.batch.engine import Job, SampleOutput
from tir_agent.config import GenerateConfig
from tir_agent.errors import AuthenticationError, ConfigError, ModelError, SandboxError

__all__ = ["RaySolver", "SampleActor", "default_actors"]

log = get_logger(__name__)

LOCAL_OBJECT_STORE = 256 * 1024**2
"""Object store of a local cluster we start: rows and results are small (Ray's default takes 30%
of the machine's memory)."""

_ERRORS: dict[str, type[Exception]] = {
    "AuthenticationError": AuthenticationError,
    "ModelError": ModelError,
    "SandboxError": SandboxError,
}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray needs Ray: pip install 'tir-agent[ray]' (or pip install ray)"
        ) from None
    return ray


class SampleActor:
    """The body of one Ray actor: an agent with its own sandbox, solving the jobs it is sent."""

    def __init__(self, config: GenerateConfig) -> None:
        self.config = config
        self._stack: contextlib.AsyncExitStack | None = None
        self._solver: Any = None
        self._lock: Any = None

    async def _ready(self) -> Any:
        import asyncio

        from tir_agent.batch.solver import AgentSolver, open_agent

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._solver is None:
                self._stack = contextlib.AsyncExitStack()
                agent = await self._stack.enter_async_context(open_agent(self.config))
                self._solver = AgentSolver(self.config, agent)
        return self._solver

    async def solve(self, index: int, seed: int | None, row: dict[str, Any]) -> tuple[Any, ...]:
        """Solve one job: ``("ok", fields, tokens, requests)`` or ``("error", kind, message)``."""
        solver = await self._ready()
        try:
            out = await solver(Job(index=index, seed=seed, row=row))
        except (AuthenticationError, ModelError, SandboxError) as e:
            kind = next(name for name, cls in _ERRORS.items() if isinstance(e, cls))
            return ("error", kind, str(e))
        return ("ok", out.fields, out.tokens, out.requests)

    async def close(self) -> None:
        """Close the agent and its sandbox."""
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
            self._solver = None


def default_actors(nodes: list[dict[str, Any]], cpus_per_actor: int) -> int:
    """One actor per ``cpus_per_actor`` CPUs of each alive node, at least one per node."""
    count = 0
    for node in nodes:
        if node.get("Alive", node.get("alive", False)):
            cpus = int(node.get("Resources", {}).get("CPU", 0))
            count += max(1, cpus // cpus_per_actor)
    return max(1, count)


class RaySolver:
    """The engine's solver on Ray: each job is solved by one of ``actors`` (see module docs)."""

    def __init__(self, actors: list[Any], per_actor: int) -> None:
        self.actors = actors
        self.per_actor = per_actor
        self._inflight = [0] * len(actors)

    @property
    def concurrency(self) -> int:
        """Samples in flight over all actors."""
        return len(self.actors) * self.per_actor

    async def __call__(self, job: Job) -> SampleOutput:
        """Solve ``job`` on the least busy actor; errors come back as the agent raised them."""
        ray = _import_ray()
        i = min(range(len(self.actors)), key=self._inflight.__getitem__)
        self._inflight[i] += 1
        try:
            reply = await self.actors[i].solve.remote(job.index, job.seed, job.row)
        except ray.exceptions.RayActorError as e:
            raise SandboxError(f"the Ray actor solving this sample died: {e}") from e
        finally:
            self._inflight[i] -= 1
        if reply[0] == "error":
            raise _ERRORS[reply[1]](reply[2])
        _, fields, tokens, requests = reply
        return SampleOutput(fields, tokens=tokens, requests=requests)

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, config: GenerateConfig) -> AsyncIterator[RaySolver]:
        """Join the cluster (or start a local one), start the actors; stop them on exit.

        A process already connected to Ray (``ray.init`` called before) keeps that connection,
        whatever ``ray.address`` says, and leaves it open afterwards."""
        ray = _import_ray()
        started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if config.ray.address is None:
                options.update(include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE)
            if config.ray.address is not None:
                _check_reachable(config.ray.address)
            try:
                ray.init(address=config.ray.address, **options)
            except ConnectionError as e:
                raise ConfigError(
                    f"cannot reach the Ray cluster at {config.ray.address}: {e}; check "
                    "RAY_ADDRESS / ray.address (`ray status` on the head node shows its address)"
                ) from None
            started = True
        try:
            count = config.ray.actors or default_actors(ray.nodes(), config.ray.cpus_per_actor)
            per_actor = config.max_concurrent_requests
            remote = ray.remote(SampleActor).options(
                num_cpus=1,
                max_concurrency=per_actor,
                max_restarts=-1,
                max_task_retries=1,
                scheduling_strategy="SPREAD",
            )
            actors = [remote.remote(config) for _ in range(count)]
            log.info("ray.start", actors=count, per_actor=per_actor, address=config.ray.address)
            try:
                yield cls(actors, per_actor)
            finally:
                with contextlib.suppress(Exception):
                    await _gather_refs([a.close.remote() for a in actors])
                for actor in actors:
                    with contextlib.suppress(Exception):
                        ray.kill(actor)
        finally:
            if started:
                ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail fast on a ``host:port`` nobody listens on (Ray itself retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", "local", a ray:// URL: Ray's business
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e}); check RAY_ADDRESS "
            "or ray.address (`ray status` on the head node prints the address)"
        ) from None


async def _gather_refs(refs: list[Any]) -> None:
    import asyncio

    await asyncio.wait_for(asyncio.gather(*refs, return_exceptions=True), timeout=30)
