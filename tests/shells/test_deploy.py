"""deploy/: the Dockerfile, the compose file, nginx.conf and the Kubernetes manifests, checked structurally.

Nothing here runs a container or a cluster (deploy/README.md says so): the
files are parsed and cross-checked, against each other and against what
Lockgate reads (every ``GATEWAY_*`` variable named in them, the servers and
rules files, the settings the environment gives, the keys' form).
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from lockgate.core import environment_variables, load_config, settings_from_env
from lockgate.shells.sealed import key_from_environ

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
REPLICAS = ("lockgate1", "lockgate2", "lockgate3")
PORT = 8000

#: The kind and apiVersion of each manifest.
KINDS = {
    "deployment.yaml": ("Deployment", "apps/v1"),
    "service.yaml": ("Service", "v1"),
    "configmap.yaml": ("ConfigMap", "v1"),
    "secret.yaml": ("Secret", "v1"),
    "pdb.yaml": ("PodDisruptionBudget", "policy/v1"),
}


def manifests() -> dict[str, dict[str, Any]]:
    """Each manifest file's one document, by file name."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert len(documents) == 1, path.name
        found[path.name] = documents[0]
    return found


def manifest(kind: str) -> dict[str, Any]:
    (found,) = [m for m in manifests().values() if m["kind"] == kind]
    return found


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def container() -> dict[str, Any]:
    (only,) = manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def env_of(spec: dict[str, Any]) -> dict[str, Any]:
    """A container's ``env``, by name: the value, or the ``valueFrom``."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in spec["env"]}


def secret_values() -> dict[str, str]:
    secret = manifest("Secret")
    values: dict[str, str] = dict(secret.get("stringData", {}))
    values.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
    return values


def deployment_environ() -> dict[str, str]:
    """The pod's environment as Kubernetes would build it: plain values, and the Secret's where referenced."""
    secrets = secret_values()
    environ = {}
    for name, value in env_of(container()).items():
        environ[name] = secrets[value["secretKeyRef"]["key"]] if isinstance(value, dict) else value
    return environ


def test_every_yaml_file_parses_with_the_right_kind_and_api_version() -> None:
    found = manifests()
    assert set(found) == set(KINDS)
    for name, (kind, api) in KINDS.items():
        assert (found[name]["kind"], found[name]["apiVersion"]) == (kind, api), name
        assert found[name]["metadata"]["name"]
    assert isinstance(compose()["services"], dict)


def test_the_deployment_selector_service_and_budget_select_the_same_pods() -> None:
    deployment = manifest("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector and selector.items() <= labels.items()
    assert deployment["spec"]["replicas"] == 3
    service = manifest("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["selector"] == selector
    assert service["spec"].get("sessionAffinity", "None") == "None"
    budget = manifest("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"] == selector
    # A budget that lets no pod go would block every drain; one that keeps none is no budget.
    assert budget["spec"].get("maxUnavailable") == 1 or 1 <= budget["spec"].get("minAvailable", 0) < 3


def test_probes_ask_ready_and_health_on_the_container_port() -> None:
    spec = container()
    (port,) = spec["ports"]
    assert port["containerPort"] == PORT
    service = manifest("Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] in ([port["name"]], [PORT])
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = spec[probe]["httpGet"]
        assert get["path"] == path
        assert get["port"] in (port["name"], PORT)
        # Lockgate checks Host: the probe's must be one it accepts.
        hosts = {h["value"] for h in get.get("httpHeaders", []) if h["name"].lower() == "host"}
        allowed = deployment_environ()["GATEWAY_ALLOWED_HOSTS"].split(",")
        assert hosts and hosts <= set(allowed), probe


def test_the_container_runs_without_privileges_and_with_resources() -> None:
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    spec = container()
    assert spec["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(spec["resources"]["requests"]) and {"cpu", "memory"} <= set(spec["resources"]["limits"])
    # Past the shutdown grace, so calls in flight finish before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] > float(deployment_environ()["GATEWAY_SHUTDOWN_GRACE"])


def test_every_secret_and_config_map_the_deployment_uses_exists_with_its_keys() -> None:
    secret = manifest("Secret")
    config = manifest("ConfigMap")
    references = [v["secretKeyRef"] for v in env_of(container()).values() if isinstance(v, dict)]
    assert {r["name"] for r in references} == {secret["metadata"]["name"]}
    assert {r["key"] for r in references} <= set(secret_values())
    # The session key comes from the Secret, never from a plain value.
    assert isinstance(env_of(container())["GATEWAY_SESSION_KEY"], dict)
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (config_volume,) = [v for v in volumes.values() if "configMap" in v]
    assert config_volume["configMap"]["name"] == config["metadata"]["name"]
    items = {item["key"]: item["path"] for item in config_volume["configMap"]["items"]}
    assert set(items) <= set(config["data"])
    (mount,) = [m for m in container()["volumeMounts"] if m["name"] == config_volume["name"]]
    environ = deployment_environ()
    # The servers and rules files Lockgate is pointed at are the ConfigMap's, mounted.
    mounted = {f"{mount['mountPath']}/{path}": key for key, path in items.items()}
    assert environ["GATEWAY_MCP_CONFIG"] in mounted and environ["GATEWAY_RULES"] in mounted


def test_the_config_map_holds_files_lockgate_accepts() -> None:
    data = manifest("ConfigMap")["data"]
    config = load_config(servers=data["mcp.json"], rules=data["rules.json"], environ={})
    assert config.servers and config.policy.agents


def test_the_settings_each_deployment_gives_are_valid() -> None:
    for environ in (deployment_environ(), *(replica_environ(name) for name in REPLICAS)):
        settings = settings_from_env(environ)
        assert (settings.auth, settings.http_port) == ("required", PORT)
        # 32 bytes of base64url, as Lockgate wants its keys.
        key_from_environ({"GATEWAY_SECRET_KEY": environ["GATEWAY_SECRET_KEY"]})
        session = environ["GATEWAY_SESSION_KEY"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}=?", session) and len(base64.urlsafe_b64decode(session.rstrip("=") + "=")) == 32


def replica_environ(name: str) -> dict[str, str]:
    environment = compose()["services"][name]["environment"]
    assert isinstance(environment, dict)
    return {key: str(value) for key, value in environment.items()}


def test_compose_runs_postgres_redis_three_replicas_sharing_their_keys_and_nginx() -> None:
    services = compose()["services"]
    assert set(services) >= {"postgres", "redis", "nginx", *REPLICAS}
    environments = [replica_environ(name) for name in REPLICAS]
    shared = ("GATEWAY_SESSION_KEY", "GATEWAY_REDIS_URL", "GATEWAY_DATABASE_URL", "GATEWAY_SECRET_KEY", "GATEWAY_JWT_SECRET")
    for variable in shared:
        assert len({environ[variable] for environ in environments}) == 1, variable
    environ = environments[0]
    assert environ["GATEWAY_REDIS_URL"].startswith("redis://redis:")
    database = re.fullmatch(r"postgresql://([^:]+):([^@]+)@postgres:5432/(\w+)", environ["GATEWAY_DATABASE_URL"])
    assert database is not None
    postgres = services["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"]) == database.groups()
    for name in REPLICAS:
        replica = services[name]
        assert replica["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / replica["build"]["context"] / replica["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert set(replica["depends_on"]) >= {"postgres", "redis"}
    nginx = services["nginx"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert set(nginx["depends_on"]) == set(REPLICAS)


def nginx_conf() -> str:
    # Without comments: what is said about ip_hash in one is no directive.
    return "\n".join(line.split("#", 1)[0] for line in (DEPLOY / "nginx.conf").read_text().splitlines())


def test_nginx_balances_round_robin_over_the_three_replicas_and_passes_sse_through() -> None:
    text = nginx_conf()
    upstream = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", text, re.S)
    assert upstream is not None
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream.group(2), re.M)
    assert servers == [(name, str(PORT)) for name in REPLICAS]
    # Round-robin with no stickiness: none of the directives that pin a client.
    for pinning in ("ip_hash", "hash ", "sticky", "least_conn", "random"):
        assert pinning not in upstream.group(2)
    assert f"proxy_pass http://{upstream.group(1)};" in text
    for directive in ("proxy_buffering off;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";'):
        assert directive in text
    timeout = re.search(r"proxy_read_timeout\s+(\d+)s;", text)
    assert timeout is not None and int(timeout.group(1)) >= 300
    assert "non_idempotent" not in text  # a POST that reached a replica is never sent to another


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_dockerfile_is_slim_runs_as_a_user_and_checks_health() -> None:
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    (user,) = [rest for word, rest in instructions if word == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert [rest for word, rest in instructions if word == "EXPOSE"] == [str(PORT)]
    (check,) = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert f"http://localhost:{PORT}/health" in check and "curl" not in check
    command = json.loads(check.split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    compile(command[2], "healthcheck", "exec")  # the check is Python that compiles
    (entrypoint,) = [json.loads(rest) for word, rest in instructions if word == "ENTRYPOINT"]
    assert entrypoint == ["lockgate", "serve", "--transport", "http"]
    environ = dict(
        item.split("=", 1) for word, rest in instructions if word == "ENV" for item in shlex.split(rest)
    )
    assert environ["GATEWAY_HTTP_PORT"] == str(PORT) and environ["GATEWAY_HTTP_HOST"] == "0.0.0.0"
    assert settings_from_env(environ).transport == "stdio"  # the flag, not the variable, picks HTTP


def read_variables() -> set[str]:
    """Every ``GATEWAY_*`` variable Lockgate reads: its settings list, and any other the code names."""
    names = {variable.name for variable in environment_variables()}
    for folder in ("core", "shells"):
        for path in (ROOT / folder).rglob("*.py"):
            names.update(re.findall(r"[\"'](GATEWAY_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


@pytest.mark.parametrize("path", ["Dockerfile", "compose.yaml", "nginx.conf", "README.md", "k8s"])
def test_every_variable_named_in_deploy_is_one_lockgate_reads(path: str) -> None:
    files = [DEPLOY / path] if (DEPLOY / path).is_file() else sorted((DEPLOY / path).rglob("*"))
    named = {name for file in files for name in re.findall(r"\bGATEWAY_[A-Z0-9_]+\b", file.read_text())}
    assert named <= read_variables(), sorted(named - read_variables())
