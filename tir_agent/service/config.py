"""Options of the sandbox server (``tir-agent sandbox serve``)."""

from __future__ import annotations

import ipaddress
import math

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tir_agent.errors import ConfigError
from tir_agent.sandbox.config import SandboxConfig
from tir_agent.sandbox.http_api import DEFAULT_PORT, MAX_BODY_BYTES, TOKEN_ENV

MAX_CONNECTIONS = 4096
"""Default cap on open client connections."""
REQUEST_TIMEOUT = 30.0
"""Default seconds a client may take to send one request (and may stall reading a reply)."""
KEEP_ALIVE = 75.0
"""Default seconds an idle client connection stays open: longer than nginx's upstream keep-alive
(60 s), so a proxy never reuses a connection the server is closing at that moment."""
MAX_HEADER_BYTES = 64 * 1024
"""Default limit of a request's line and headers together, in bytes (431 above it)."""
MAX_TIMEOUT = 1800.0
"""Default largest ``timeout`` a request may ask for, in seconds: well below the read timeout of
the nginx config of ``nginx-config`` (3600 s), so nginx never cuts off a cell the server allows."""
MAX_OUTPUT_CAP = 1_000_000
"""Default largest ``max_output_characters`` a request may ask for."""


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
    max_connections: int = Field(MAX_CONNECTIONS, gt=0)
    """Open client connections at most. At the cap the connection waiting longest for its next
    request is closed to make room; when all have a request in progress, a new one gets 503."""
    request_timeout: float = Field(REQUEST_TIMEOUT, gt=0, allow_inf_nan=False)
    """Seconds from a request's first byte (a new connection's opening) until its headers and
    body have arrived; also the longest a reply may stall because the client does not read it.
    Slower clients are disconnected."""
    keep_alive: float = Field(KEEP_ALIVE, gt=0, allow_inf_nan=False)
    """Seconds an idle connection (between requests) stays open."""
    max_header_bytes: int = Field(MAX_HEADER_BYTES, ge=1024)
    """Largest request line plus headers, in bytes (431 and the connection closed above it)."""
    max_timeout: float = Field(MAX_TIMEOUT, gt=0, allow_inf_nan=False)
    """Largest ``timeout`` of one execution a request may ask for, in seconds (422 above it)."""
    max_output_cap: int = Field(MAX_OUTPUT_CAP, ge=0, le=2**53)
    """Largest ``max_output_characters`` a request may ask for (422 above it)."""
    sandbox: SandboxConfig = Field(default_factory=lambda: SandboxConfig.model_validate({}))
    """The :class:`~tir_agent.sandbox.LocalSandbox` serving the sessions."""

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> ServiceConfig:
        timeout = self.sandbox.timeout
        if not math.isfinite(timeout) or timeout > self.max_timeout:
            raise ValueError(
                f"the default execution timeout ({timeout:g} s, --timeout) is above the largest "
                f"a request may ask for ({self.max_timeout:g} s, --max-timeout): lower the first "
                "or raise the second"
            )
        if self.sandbox.max_output_characters > self.max_output_cap:
            raise ValueError(
                f"the default output cap ({self.sandbox.max_output_characters}, "
                "--max-output-characters) is above the largest a request may ask for "
                f"({self.max_output_cap}, --max-output-cap): lower the first or raise the second"
            )
        return self

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
