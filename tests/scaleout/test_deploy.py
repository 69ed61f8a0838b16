"""The example deployments in deploy/: well-formed, schema-valid and consistent with the code."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tir_agent.errors import ConfigError
from tir_agent.sandbox.http_api import API_PREFIX, DEFAULT_PORT, SESSION_HEADER, TOKEN_ENV
from tir_agent.service.command import add_serve_arguments, service_config
from tir_agent.service.config import check_exposure
from tir_agent.service.nginx import nginx_command, render_nginx_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OLDEST_KUBERNETES = "1.30.0"
"""The oldest version the manifests are valid for (``securityContext.appArmorProfile``)."""

EXAMPLE_UPSTREAMS = ["http://127.0.0.1:6001", "http://127.0.0.1:6002"]
EXAMPLE_LISTEN = "127.0.0.1:6000"


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object of deploy/kubernetes/, by kind."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in objects, f"two {doc['kind']} objects"
            objects[doc["kind"]] = doc
    return objects


@pytest.mark.parametrize("path", sorted(KUBERNETES.glob("*.yaml")), ids=lambda p: p.name)
def test_manifest_is_schema_valid(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["kind"] == "Kustomization":
            continue
        kubernetes_validate.validate(doc, OLDEST_KUBERNETES, strict=True)


def test_schema_validation_catches_a_misspelt_field() -> None:
    deployment = manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["terminationGraceSeconds"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, OLDEST_KUBERNETES, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(files)


def test_objects_refer_to_one_another() -> None:
    objs = manifests()
    deployment, service, ingress, secret = (
        objs["Deployment"],
        objs["Service"],
        objs["Ingress"],
        objs["Secret"],
    )
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()

    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": DEFAULT_PORT}
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in ports

    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] == service_port["name"]

    (env,) = container["env"]
    assert env["name"] == TOKEN_ENV
    ref = env["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    assert secret["stringData"][ref["key"]] == "", "never ship a usable default token"

    assert container["readinessProbe"]["httpGet"]["path"] == f"{API_PREFIX}/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    # The servers' shutdown grace (30 s by default) fits in the pod's termination grace.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 30


def test_ingress_routes_sessions_by_their_header() -> None:
    annotations = manifests()["Ingress"]["metadata"]["annotations"]
    header = "$http_" + SESSION_HEADER.lower().replace("-", "_")
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == header
    assert annotations["nginx.ingress.kubernetes.io/proxy-next-upstream"] == "error timeout"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600


def test_nginx_example_is_the_rendered_config(tmp_path: Path) -> None:
    """deploy/nginx/example.conf is what render_nginx_config writes, and nginx accepts it."""
    example = (DEPLOY / "nginx" / "example.conf").read_text()
    assert example == render_nginx_config(EXAMPLE_UPSTREAMS, listen=EXAMPLE_LISTEN)
    conf = tmp_path / "nginx.conf"
    conf.write_text(example)
    result = subprocess.run(
        nginx_command(tmp_path, conf, test=True), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_the_pods_command_is_a_valid_serve_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """The container's arguments parse as `tir-agent sandbox serve`, and the server refuses to
    start when the Secret's token was left empty."""
    (container,) = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["tir-agent"]
    assert container["args"][:2] == ["sandbox", "serve"]
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args, overrides = parser.parse_known_args(container["args"][2:])

    monkeypatch.setenv(TOKEN_ENV, "a-real-token")
    config = service_config(args, overrides)
    assert (config.host, config.port, config.token) == ("0.0.0.0", DEFAULT_PORT, "a-real-token")
    assert config.sandbox.max_sessions == 256
    check_exposure(config)

    monkeypatch.setenv(TOKEN_ENV, "")  # secret.yaml as shipped
    with pytest.raises(ConfigError, match="without a token"):
        check_exposure(service_config(args, overrides))
