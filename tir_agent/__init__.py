"""tir-agent: tool-integrated reasoning with a real sandbox.

The public API is flat: everything a user needs is importable from ``tir_agent``. Names are loaded
on first use, so ``import tir_agent`` stays cheap (the CLI and the sandbox's worker processes do
not pay for the ``openai`` SDK or math-verify unless they use them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tir_agent._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # The agent.
    "Agent": "tir_agent.agent",
    "AgentConfig": "tir_agent.agent_config",
    "SolveResult": "tir_agent.turn",
    "SolveStatus": "tir_agent.turn",
    "Turn": "tir_agent.turn",
    "CodeCall": "tir_agent.turn",
    "Execution": "tir_agent.turn",
    "Usage": "tir_agent.turn",
    "Event": "tir_agent.turn",
    "TextDelta": "tir_agent.turn",
    "CodeStart": "tir_agent.turn",
    "CodeComplete": "tir_agent.turn",
    "ExecutionDone": "tir_agent.turn",
    "TurnEnd": "tir_agent.turn",
    "ToolCall": "tir_agent.turn",
    "ToolCallDone": "tir_agent.turn",
    "Finished": "tir_agent.turn",
    # Formats, budgets and answers.
    "TagPreset": "tir_agent.formats.tags",
    "PRESETS": "tir_agent.formats.tags",
    "get_preset": "tir_agent.formats.tags",
    "format_output": "tir_agent.formats.output",
    "extract_answer": "tir_agent.answers",
    # Prompts and chat templates.
    "PromptConfig": "tir_agent.prompts",
    "FewShotExample": "tir_agent.prompts",
    "load_prompt": "tir_agent.prompts",
    "available_prompts": "tir_agent.prompts",
    "ChatTemplate": "tir_agent.chat_templates",
    "get_chat_template": "tir_agent.chat_templates",
    # The sandbox.
    "LocalSandbox": "tir_agent.sandbox.local",
    "SyncSandbox": "tir_agent.sandbox.sync",
    "RemoteSandbox": "tir_agent.sandbox.remote",
    "RemoteSession": "tir_agent.sandbox.remote",
    "SyncRemoteSandbox": "tir_agent.sandbox.sync",
    "ServiceConfig": "tir_agent.service.config",
    "SandboxConfig": "tir_agent.sandbox.config",
    "ExecutionResult": "tir_agent.sandbox.result",
    "Sandbox": "tir_agent.sandbox.base",
    "SandboxSession": "tir_agent.sandbox.base",
    "Protections": "tir_agent.sandbox.isolation",
    "detect_protections": "tir_agent.sandbox.isolation",
    # Batch work, grading and metrics.
    "GenerateConfig": "tir_agent.config",
    "load_config": "tir_agent.config",
    "generate": "tir_agent.batch",
    "is_equivalent": "tir_agent.grading",
    "grade_many": "tir_agent.grading",
    "grade_records": "tir_agent.grading",
    "compute_metrics": "tir_agent.metrics",
    "EvaluationMetrics": "tir_agent.metrics",
    # Errors.
    "TirAgentError": "tir_agent.errors",
    "ConfigError": "tir_agent.errors",
    "PromptError": "tir_agent.errors",
    "SandboxError": "tir_agent.errors",
    "SandboxClosedError": "tir_agent.errors",
    "IsolationError": "tir_agent.errors",
    "SandboxServiceError": "tir_agent.errors",
    "ToolServerError": "tir_agent.errors",
    "ModelError": "tir_agent.errors",
    "AuthenticationError": "tir_agent.errors",
    "RateLimitError": "tir_agent.errors",
    "ContextLengthError": "tir_agent.errors",
    "BadRequestError": "tir_agent.errors",
}

__all__ = [
    "PRESETS",
    "Agent",
    "AgentConfig",
    "AuthenticationError",
    "BadRequestError",
    "ChatTemplate",
    "CodeCall",
    "CodeComplete",
    "CodeStart",
    "ConfigError",
    "ContextLengthError",
    "EvaluationMetrics",
    "Event",
    "Execution",
    "ExecutionDone",
    "ExecutionResult",
    "FewShotExample",
    "Finished",
    "GenerateConfig",
    "IsolationError",
    "LocalSandbox",
    "ModelError",
    "PromptConfig",
    "PromptError",
    "Protections",
    "RateLimitError",
    "RemoteSandbox",
    "RemoteSession",
    "Sandbox",
    "SandboxClosedError",
    "SandboxConfig",
    "SandboxError",
    "SandboxServiceError",
    "SandboxSession",
    "ServiceConfig",
    "SolveResult",
    "SolveStatus",
    "SyncRemoteSandbox",
    "SyncSandbox",
    "TagPreset",
    "TextDelta",
    "TirAgentError",
    "ToolCall",
    "ToolCallDone",
    "ToolServerError",
    "Turn",
    "TurnEnd",
    "Usage",
    "__version__",
    "available_prompts",
    "compute_metrics",
    "detect_protections",
    "extract_answer",
    "format_output",
    "generate",
    "get_chat_template",
    "get_preset",
    "grade_many",
    "grade_records",
    "is_equivalent",
    "load_config",
    "load_prompt",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)

if TYPE_CHECKING:
    from tir_agent.agent import Agent
    from tir_agent.agent_config import AgentConfig
    from tir_agent.answers import extract_answer
    from tir_agent.batch import generate
    from tir_agent.chat_templates import ChatTemplate, get_chat_template
    from tir_agent.config import GenerateConfig, load_config
    from tir_agent.errors import (
        AuthenticationError,
        BadRequestError,
        ConfigError,
        ContextLengthError,
        IsolationError,
        ModelError,
        PromptError,
        RateLimitError,
        SandboxClosedError,
        SandboxError,
        SandboxServiceError,
        TirAgentError,
        ToolServerError,
    )
    from tir_agent.formats.output import format_output
    from tir_agent.formats.tags import PRESETS, TagPreset, get_preset
    from tir_agent.grading import grade_many, grade_records, is_equivalent
    from tir_agent.metrics import EvaluationMetrics, compute_metrics
    from tir_agent.prompts import FewShotExample, PromptConfig, available_prompts, load_prompt
    from tir_agent.sandbox.base import Sandbox, SandboxSession
    from tir_agent.sandbox.config import SandboxConfig
    from tir_agent.sandbox.isolation import Protections, detect_protections
    from tir_agent.sandbox.local import LocalSandbox
    from tir_agent.sandbox.remote import RemoteSandbox, RemoteSession
    from tir_agent.sandbox.result import ExecutionResult
    from tir_agent.sandbox.sync import SyncRemoteSandbox, SyncSandbox
    from tir_agent.service.config import ServiceConfig
    from tir_agent.turn import (
        CodeCall,
        CodeComplete,
        CodeStart,
        Event,
        Execution,
        ExecutionDone,
        Finished,
        SolveResult,
        SolveStatus,
        TextDelta,
        ToolCall,
        ToolCallDone,
        Turn,
        TurnEnd,
        Usage,
    )
