"""The flat public API: every name in ``tir_agent.__all__`` resolves, and the list is pinned."""

from __future__ import annotations

import subprocess
import sys

import tir_agent

EXPECTED = {
    "Agent", "AgentConfig", "AuthenticationError", "BadRequestError", "ChatTemplate", "CodeCall",
    "CodeComplete", "CodeStart", "ConfigError", "ContextLengthError", "EvaluationMetrics",
    "Event", "Execution", "ExecutionDone", "ExecutionResult", "FewShotExample", "Finished",
    "GenerateConfig", "IsolationError", "LocalSandbox", "ModelError", "PRESETS", "PromptConfig",
    "PromptError", "Protections", "RateLimitError", "Sandbox", "SandboxClosedError",
    "SandboxConfig", "SandboxError", "SandboxSession", "SolveResult", "SolveStatus",
    "SyncSandbox", "RemoteSandbox", "RemoteSession", "SyncRemoteSandbox", "ServiceConfig",
    "SandboxServiceError", "TagPreset", "TextDelta", "TirAgentError", "Turn", "TurnEnd", "Usage",
    "ToolCall", "ToolCallDone", "ToolServerError",
    "__version__", "available_prompts", "compute_metrics", "detect_protections",
    "extract_answer", "format_output", "generate", "get_chat_template", "get_preset",
    "grade_many", "grade_records", "is_equivalent", "load_config", "load_prompt",
}  # fmt: skip


def test_all_is_pinned() -> None:
    assert set(tir_agent.__all__) == EXPECTED


def test_every_exported_name_resolves_from_its_module() -> None:
    for name in tir_agent.__all__:
        value = getattr(tir_agent, name)
        assert value is not None, name
        if hasattr(value, "__module__") and name != "__version__" and isinstance(value, type):
            assert value.__module__.startswith("tir_agent"), name


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        tir_agent.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as e:
        assert "NoSuchThing" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_import_is_cheap() -> None:
    """``import tir_agent`` must not pull in the openai SDK, numpy or math-verify."""
    code = (
        "import sys, tir_agent\n"
        "heavy = [m for m in ('openai', 'numpy', 'math_verify', 'sympy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_all_matches_the_lazy_table() -> None:
    assert set(tir_agent.__all__) == {*tir_agent._EXPORTS, "__version__"}
