"""Options of the sandbox server (``tir-agent sandbox serve``)."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tir_agent.errors import ConfigError
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.service.api import DEFAULT_PORT, MAX_BODY_BYTES, TOKEN_ENV


class ServiceConfig(BaseModel):
    """How the server listens, whom it serves, and the sandbox it serves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    """Address to bind; anything but loopback needs a ``token`` (or ``allow_insecure``)."""
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    """TCP port (6000, NeMo-Skills' default; 0 picks a free one)."""
    token: str | None = None
    """Bearer token every request must carry (``Authorization: Bearer ...``), except health
    checks; ``None``: no authentication. The CLI falls back to ``$TIR_AGENT_SANDBOX_TOKEN``."""
    allow_insecure: bool = False
    """Bind a non-loopback address without a token (only on a network you trust)."""
    max_body_bytes: int = Field(MAX_BODY_BYTES, gt=0)
    """Largest request body accepted, in bytes (413 above it)."""
    shutdown_grace: float = Field(30.0, ge=0)
    """Seconds in-flight executions may take to finish after SIGTERM before they are cut."""
    sandbox: SandboxConfig = Field(default_factory=lambda: SandboxConfig.model_validate({}))
    """The :class:`~tir_agent.sandbox.LocalSandbox` serving the sessions."""

    @field_validator("token")
    @classmethod
    def _token_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("the token must not be empty (leave it unset for no authentication)")
        return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything: treat it as public


def check_exposure(config: ServiceConfig) -> None:
    """Refuse to serve a non-loopback address without a token unless ``allow_insecure``."""
    if config.token is None and not config.allow_insecure and not is_loopback(config.host):
        raise ConfigError(
            f"refusing to serve the sandbox on {config.host} without a token: anyone who can "
            f"reach port {config.port} could run code on this machine. Set a token with --token "
            f"(or ${TOKEN_ENV}) and give it to the clients, bind 127.0.0.1 behind a proxy, or "
            "pass --allow-insecure if this network is trusted."
        )
