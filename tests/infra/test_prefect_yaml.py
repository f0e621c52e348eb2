"""The `cluster` deployments of prefect.yaml: existing flows, the store and the Ray address from the
environment, flow runs in the image's project folder; deployed by the compose file's own command."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.templating import apply_values

from ..prefect_server import start_prefect_server
from .compose_cli import REPO, example_config

ENV = {"RODIN_STORE": "s3://bucket/corpus", "RODIN_PRESET": "small", "RAY_ADDRESS": "ray://head:10001"}
STORE_PARAMETERS = ("out", "renders", "checkpoints")
IMAGE_PROJECT = "/opt/rodin"


def cluster_deployments() -> list[dict[str, Any]]:
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    return [deployment for deployment in deployments if deployment["name"] == "cluster"]


def resolved(deployment: dict[str, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``deployment`` as `prefect deploy` resolves it in the environment ``env``."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return apply_values(deployment, os.environ, remove_notset=False)


def env_problems(deployment: dict[str, Any], signature: inspect.Signature) -> list[str]:
    """What a cluster deployment does not read from the environment: it must set at least one dataset
    root of its flow, each to ``{{ $RODIN_STORE }}`` (a root left out must default to None: the same
    root), and ``ray_address`` to ``{{ $RAY_ADDRESS }}`` where the flow takes one."""
    given, where = deployment.get("parameters", {}), deployment["entrypoint"]
    roots = [name for name in STORE_PARAMETERS if name in signature.parameters]
    problems = [f"{where}: {name} is {given[name]!r}, not {{{{ $RODIN_STORE }}}}"
                for name in roots if name in given and given[name] != "{{ $RODIN_STORE }}"]
    problems += [f"{where}: {name} is left at {signature.parameters[name].default!r}"
                 for name in roots if name not in given and signature.parameters[name].default is not None]
    if not any(name in given for name in roots):
        problems.append(f"{where}: sets none of its dataset roots {roots}")
    if "ray_address" in signature.parameters and given.get("ray_address") != "{{ $RAY_ADDRESS }}":
        problems.append(f"{where}: ray_address is {given.get('ray_address')!r}, not {{{{ $RAY_ADDRESS }}}}")
    return problems


def flow_signature(entrypoint: str) -> inspect.Signature:
    return inspect.signature(load_flow_from_entrypoint(entrypoint).fn)


def test_prefect_accepts_the_file() -> None:
    """`prefect deploy` skips a prefect.yaml its model refuses (a warning, then no deployment at all)."""
    from prefect.cli.deploy._models import PrefectYamlModel

    raw = yaml.safe_load((REPO / "prefect.yaml").read_text())
    model = PrefectYamlModel.model_validate(raw)
    assert [d.name for d in model.deployments].count("cluster") == 5
    assert [d.name for d in model.deployments].count("tiny") == 11
    raw["deployments"][-1]["pull"] = "/opt/rodin"
    with pytest.raises(ValueError, match="pull"):
        PrefectYamlModel.model_validate(raw)


def test_cluster_deployments_run_existing_flows_with_the_environments_store_and_ray(
        monkeypatch: pytest.MonkeyPatch) -> None:
    deployments = cluster_deployments()
    tiny = {d["entrypoint"] for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
            if d["name"] == "tiny"}
    assert {d["entrypoint"] for d in deployments} <= tiny and len(deployments) == 5
    for deployment in deployments:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        signature = inspect.signature(flow.fn)
        parameters = set(signature.parameters)
        assert env_problems(deployment, signature) == []
        values = resolved(deployment, ENV, monkeypatch)["parameters"]
        validated = flow.validate_parameters(values)  # raises on an unknown parameter or a wrong type
        assert {name: validated[name] for name in values} == values
        assert ENV["RODIN_STORE"] in values.values()
        assert ("ray_address" in parameters) == (values.get("ray_address") == ENV["RAY_ADDRESS"])
        assert deployment["build"] == [] and deployment["work_pool"]["name"] == "rodin-process"
        assert deployment["pull"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_PROJECT}}]
    assert {d["entrypoint"] for d in deployments if "ray_address" in d["parameters"]} == {
        "workflows.render_avatars:render_avatars", "workflows.fit_triplanes:fit_triplanes",
        "workflows.train_flows:train_all"}


def test_a_deployment_that_ignores_the_environment_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    render = next(d for d in cluster_deployments() if d["entrypoint"].endswith(":render_avatars"))
    local = {**render, "parameters": {**render["parameters"], "out": "data/tiny"}}
    del local["parameters"]["ray_address"]
    assert env_problems(local, flow_signature(render["entrypoint"])) == [
        "workflows.render_avatars:render_avatars: out is 'data/tiny', not {{ $RODIN_STORE }}",
        "workflows.render_avatars:render_avatars: ray_address is None, not {{ $RAY_ADDRESS }}"]
    fit = next(d for d in cluster_deployments() if d["entrypoint"].endswith(":fit_triplanes"))
    no_root = {**fit, "parameters": {"preset": "tiny", "ray_address": "{{ $RAY_ADDRESS }}"}}
    assert env_problems(no_root, flow_signature(fit["entrypoint"])) == [
        "workflows.fit_triplanes:fit_triplanes: renders is left at 'data/tiny'",
        "workflows.fit_triplanes:fit_triplanes: sets none of its dataset roots ['out', 'renders']"]
    unset = resolved(render, {}, monkeypatch)["parameters"]
    assert unset["ray_address"] == "{{ $RAY_ADDRESS }}", "without the variable the placeholder stays as written"


@pytest.mark.slow
def test_the_compose_setup_deploys_them(tmp_path: Path) -> None:
    """prefect-setup's command, with its environment, against a throw-away server, twice (every `up` runs it)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    setup = example_config()["services"]["prefect-setup"]
    assert setup["command"][:2] == ["sh", "-c"]
    server = start_prefect_server(tmp_path / "prefect-home", timeout_s=400)
    try:
        env = {**server.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               **{name: setup["environment"][name] for name in ENV}}
        for _ in range(2):
            start = time.perf_counter()
            run = subprocess.run(setup["command"], cwd=REPO, env=env, capture_output=True, text=True, check=False,
                                 timeout=400, start_new_session=True)
            print(f"prefect-setup took {time.perf_counter() - start:.1f} s")
            assert run.returncode == 0, run.stdout + run.stderr + server.logs()

        async def read() -> tuple[Any, Any]:
            async with get_client() as client:
                return (await client.read_deployment_by_name("render-avatars/cluster"),
                        await client.read_work_pool("rodin-process"))

        with temporary_settings({PREFECT_API_URL: server.api_url}):
            deployment, pool = asyncio.run(read())
    finally:
        server.stop()
    assert deployment.parameters == {"preset": "tiny", "out": "s3://rodin/corpus", "ray_address": "ray://ray-head:10001"}
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_PROJECT}}]
    assert deployment.work_pool_name == "rodin-process" and pool.type == "process"
    assert pool.base_job_template == json.loads((REPO / "infra" / "prefect" / "work-pool.json").read_text())
