"""The sandbox ``tir-agent generate`` makes for its samples when none is given."""

from __future__ import annotations

import pytest

from tir_agent.batch.solver import open_agent
from tir_agent.config import load_config
from tir_agent.sandbox.local import LocalSandbox
from tir_agent.sandbox.pool import SessionPool


@pytest.mark.parametrize(
    ("overrides", "ahead"),
    [((), False), (("++sandbox.fork_ahead=true",), True), (("++sandbox.fork_ahead=false",), False)],
)
async def test_samples_share_a_pool_whose_runners_are_forked_on_demand_unless_set(
    overrides: tuple[str, ...], ahead: bool
) -> None:
    """A sample's last cell is followed by no other: by default no runner is forked ahead of
    it (``fork_ahead``); the option, when given, is the user's."""
    config = load_config(
        overrides=("++server_address=http://127.0.0.1:9/v1", "++model=m", *overrides),
        env={"OPENAI_API_KEY": "unused"},
    )
    async with open_agent(config) as agent:
        pool = agent._sandbox  # (private: what the samples' sessions come from)
        assert isinstance(pool, SessionPool)
        assert isinstance(pool.sandbox, LocalSandbox)
        assert pool.sandbox.config.fork_ahead is ahead
        assert pool.sandbox.config.memory_limit == config.sandbox.memory_limit
