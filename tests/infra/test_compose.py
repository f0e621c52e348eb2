"""docker-compose.yml: valid for Compose, the services the README names, loopback ports, healthchecks
and start order, credentials only from the environment, and the settings the flows and the store read.

The file is resolved by the Compose CLI itself (``config``: interpolation, the Compose
specification's schema, references between services), never by a YAML parser of our own.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .compose_cli import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    INSTALL_HINT,
    REPO,
    compose_command,
    example_config,
    run_config,
)

README = REPO / "README.md"
LONG_RUNNING = {"postgres", "prefect-server", "s3", "ray-head", "ray-worker", "prefect-worker"}
ONE_SHOTS = {"s3-init", "prefect-setup"}
LOOPBACK = "127.0.0.1"
CREDENTIALS = ("POSTGRES_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "RAY_AUTH_TOKEN")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    if compose_command() is None:
        pytest.fail(f"the Compose CLI is missing; {INSTALL_HINT}", pytrace=False)
    return example_config()


def env_values(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of an env file."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def readme_services(text: str) -> dict[str, set[int]]:
    """The services table of README's "Run on a cluster": service -> the host ports it lists."""
    section = text.split("## Run on a cluster", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([a-z0-9-]+)`", cells[0]) if len(cells) == 3 else None
        if name:
            table[name.group(1)] = {int(port) for port in re.findall(r"\b(\d{4,5})\b", cells[2])}
    return table


def published_ports(config: dict[str, Any]) -> dict[str, set[int]]:
    """Service -> the host ports it publishes."""
    return {name: {int(port["published"]) for port in service.get("ports", [])}
            for name, service in config["services"].items()}


def port_problems(config: dict[str, Any]) -> list[str]:
    """Published ports that do not bind to the loopback address."""
    return [f"{name}: port {port.get('published')} binds to {port.get('host_ip') or 'every address'}"
            for name, service in config["services"].items() for port in service.get("ports", [])
            if port.get("host_ip") != LOOPBACK]


def start_order_problems(config: dict[str, Any]) -> list[str]:
    """Long-running services without a healthcheck, one-shots that restart, and dependencies that do
    not wait for a healthy service or a one-shot that finished."""
    services = config["services"]
    problems = [f"{name}: no healthcheck" for name in LONG_RUNNING & set(services)
                if not services[name].get("healthcheck", {}).get("test")]
    problems += [f"{name}: a one-shot restarts ({services[name].get('restart')})" for name in ONE_SHOTS & set(services)
                 if services[name].get("restart", "no") != "no"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if dependency in ONE_SHOTS else "service_healthy"
            if rule.get("condition") != wanted:
                problems.append(f"{name} -> {dependency}: condition {rule.get('condition')}, expected {wanted}")
    return sorted(problems)


def test_the_compose_cli_refuses_a_broken_file(tmp_path: Path, config: dict[str, Any]) -> None:
    broken = COMPOSE_FILE.read_text().replace("condition: service_healthy", "condition: service_up", 1)
    (tmp_path / "docker-compose.yml").write_text(broken)
    result = run_config(tmp_path / "docker-compose.yml")
    assert result.returncode != 0 and "depends_on.postgres.condition value must be one of" in result.stderr, result.stderr
    typo = COMPOSE_FILE.read_text().replace("    healthcheck:", "    healthchek:", 1)
    (tmp_path / "docker-compose.yml").write_text(typo)
    result = run_config(tmp_path / "docker-compose.yml")
    assert result.returncode != 0 and "healthchek" in result.stderr, result.stderr


def test_services_are_the_ones_the_readme_lists(config: dict[str, Any]) -> None:
    table = readme_services(README.read_text(encoding="utf-8"))
    assert set(table) == set(config["services"]) == LONG_RUNNING | ONE_SHOTS
    assert table == published_ports(config)


def test_readme_table_parser_sees_a_missing_service() -> None:
    text = README.read_text(encoding="utf-8").replace("| `s3-init` |", "| s3 init |")
    assert "s3-init" not in readme_services(text) and "s3" in readme_services(text)


def test_published_ports_bind_to_loopback(config: dict[str, Any]) -> None:
    assert port_problems(config) == []
    assert published_ports(config)["prefect-server"] == {4200}
    assert published_ports(config)["ray-head"] == {8265, 10001}
    exposed = {"services": {"ray-head": {"ports": [{"published": "8265", "target": 8265}]}}}
    assert port_problems(exposed) == ["ray-head: port 8265 binds to every address"]


def test_the_publish_host_is_one_setting(config: dict[str, Any]) -> None:
    moved = json.loads(run_config(env={"RODIN_PUBLISH_HOST": "10.1.2.3"}).stdout)
    hosts = {port["host_ip"] for service in moved["services"].values() for port in service.get("ports", [])}
    assert hosts == {"10.1.2.3"}


def test_healthchecks_and_start_order(config: dict[str, Any]) -> None:
    assert start_order_problems(config) == []
    services = config["services"]
    assert services["prefect-worker"]["depends_on"].keys() == {"prefect-setup", "ray-head", "s3-init"}
    assert services["prefect-server"]["depends_on"].keys() == {"postgres"}
    assert services["ray-worker"]["depends_on"].keys() == {"ray-head"}
    unhealthy = json.loads(json.dumps(config))
    del unhealthy["services"]["ray-head"]["healthcheck"]
    unhealthy["services"]["prefect-worker"]["depends_on"]["s3-init"]["condition"] = "service_started"
    assert start_order_problems(unhealthy) == [
        "prefect-worker -> s3-init: condition service_started, expected service_completed_successfully",
        "ray-head: no healthcheck"]


def listening_ports(name: str, service: dict[str, Any]) -> set[int]:
    """Container ports a service listens on: its published targets, the ports its command sets, and
    for the Prefect worker the port of its health server (Prefect's setting)."""
    ports = {int(port["target"]) for port in service.get("ports", [])}
    command = service.get("command") or []
    ports |= {int(arg.split("=", 1)[1]) for arg in command if re.fullmatch(r"-{1,2}[\w.-]*port=\d+", arg)}
    ports |= {int(value) for flag, value in itertools.pairwise(command) if flag == "--port"}
    if "--with-healthcheck" in command:
        from prefect.settings import get_current_settings

        ports.add(get_current_settings().worker.webserver.port)
    return ports


def test_healthchecks_probe_what_the_service_serves(config: dict[str, Any]) -> None:
    from .test_healthcheck import healthcheck

    probed = {}
    for name, service in config["services"].items():
        test = service.get("healthcheck", {}).get("test") or []
        if "/opt/rodin/infra/docker/healthcheck.py" not in test:
            continue
        args = healthcheck.build_parser().parse_args(test[test.index("/opt/rodin/infra/docker/healthcheck.py") + 1:])
        if args.check == "http":
            url = urlsplit(args.url)
            assert url.hostname == LOOPBACK and url.port in listening_ports(name, service), (name, args.url)
        probed[name] = args.check
    assert probed == {"prefect-server": "http", "s3": "http", "ray-head": "http", "prefect-worker": "http",
                      "ray-worker": "process"}
    assert listening_ports("ray-head", config["services"]["ray-head"]) >= {8265, 10001, 6379}
    assert 9999 not in listening_ports("s3", config["services"]["s3"])


def test_ray_workers_scale_without_fixed_names(config: dict[str, Any]) -> None:
    worker = config["services"]["ray-worker"]
    assert "container_name" not in worker and not worker.get("ports")
    assert "--address=ray-head:6379" in worker["command"]


def test_credentials_come_only_from_the_environment(config: dict[str, Any], tmp_path: Path) -> None:
    missing = run_config(env_file=None)
    assert missing.returncode != 0
    for name in CREDENTIALS:
        assert f"required variable {name} is missing a value: set {name} in .env (see .env.example)" in missing.stderr
    values = env_values(ENV_EXAMPLE)
    for name in CREDENTIALS:
        assert "test-only" in values[name], f".env.example: {name} must be a clearly test-only value"
    other = tmp_path / "other.env"
    other.write_text("".join(f"{name}=other-{name.lower()}\n" for name in CREDENTIALS))
    resolved = run_config(env_file=other)
    assert resolved.returncode == 0, resolved.stderr
    leaked = [values[name] for name in CREDENTIALS if values[name] in resolved.stdout]
    assert leaked == [], "docker-compose.yml writes these .env.example values itself"
    assert "other-postgres_password" in json.loads(resolved.stdout)["services"]["prefect-server"]["environment"][
        "PREFECT_API_DATABASE_CONNECTION_URL"]


def test_prefect_server_uses_postgres(config: dict[str, Any]) -> None:
    env = config["services"]["prefect-server"]["environment"]
    url = urlsplit(env["PREFECT_API_DATABASE_CONNECTION_URL"])
    postgres = config["services"]["postgres"]["environment"]
    assert url.scheme == "postgresql+asyncpg" and url.hostname == "postgres"
    assert (url.username, url.password, url.path) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"],
                                                      f"/{postgres['POSTGRES_DB']}")


def command_flag(command: list[str], flag: str) -> str:
    """The value of ``--flag=value`` or ``-flag=value`` in a service's command."""
    for arg in command:
        if arg.lstrip("-").startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {command}")


def test_the_worker_reaches_ray_the_store_and_the_api(config: dict[str, Any]) -> None:
    services = config["services"]
    worker = services["prefect-worker"]["environment"]
    ray = urlsplit(worker["RAY_ADDRESS"])
    assert ray.scheme == "ray" and ray.hostname == "ray-head"
    assert str(ray.port) == command_flag(services["ray-head"]["command"], "ray-client-server-port")
    endpoint = urlsplit(worker["AWS_ENDPOINT_URL"])
    assert endpoint.hostname == "s3" and str(endpoint.port) == command_flag(services["s3"]["command"], "s3.port")
    api = urlsplit(worker["PREFECT_API_URL"])
    assert (api.hostname, api.port, api.path) == ("prefect-server", 4200, "/api")
    assert worker["RODIN_STORE"] == f"s3://{services['s3-init']['environment']['RODIN_BUCKET']}/corpus"
    for name in ("ray-head", "ray-worker", "prefect-worker", "prefect-setup"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == worker["RAY_AUTH_TOKEN"], name
        assert {key: env[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")} == {
            key: worker[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")}, name
    assert services["s3"]["environment"]["AWS_SECRET_ACCESS_KEY"] == worker["AWS_SECRET_ACCESS_KEY"]


def test_the_store_reads_the_settings_compose_gives(config: dict[str, Any], s3_store_uri: tuple[str, dict],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The dataset root opens with nothing but the AWS_* names of the compose file in the environment."""
    import s3fs

    from rodin_core.storage import open_store

    prefix, options = s3_store_uri
    names = {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY"}
    assert set(names.values()) | {"AWS_ENDPOINT_URL"} <= set(config["services"]["prefect-worker"]["environment"])
    for option, name in names.items():
        monkeypatch.setenv(name, options[option])
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["client_kwargs"]["endpoint_url"])
    s3fs.S3FileSystem.clear_instance_cache()
    store = open_store(f"{prefix}/compose-env")
    store.fs.pipe_file(f"{store.root}/probe.txt", b"compose")
    assert store.fs.cat_file(f"{store.root}/probe.txt") == b"compose"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-test-secret")
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(PermissionError):
        open_store(f"{prefix}/compose-env").fs.cat_file(f"{store.root}/probe.txt")
    s3fs.S3FileSystem.clear_instance_cache()


def test_the_bucket_service_creates_its_bucket_once(config: dict[str, Any], s3_store_uri: tuple[str, dict],
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """s3-init's own program, run against a real S3 server, creates the bucket and may run again."""
    import s3fs

    _, options = s3_store_uri
    command = config["services"]["s3-init"]["command"]
    assert command[:2] == ["python", "-c"] and len(command) == 3, command
    env = {"AWS_ACCESS_KEY_ID": options["key"], "AWS_SECRET_ACCESS_KEY": options["secret"],
           "AWS_ENDPOINT_URL": options["client_kwargs"]["endpoint_url"], "RODIN_BUCKET": "compose-init-test"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        for _ in range(2):  # `docker compose up` runs it on every start
            s3fs.S3FileSystem.clear_instance_cache()
            exec(compile(command[2], "s3-init", "exec"), {})  # noqa: S102 - the service's program itself
            assert capsys.readouterr().out.strip() == "bucket compose-init-test ready"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert s3fs.S3FileSystem(skip_instance_cache=True, **options).exists("compose-init-test")
