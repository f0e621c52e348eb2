"""infra/prefect/work-pool.json: a base job template the Prefect server accepts for a process work pool,
whose flow runs start in the image's project folder."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest
from prefect.server.schemas.actions import WorkPoolCreate
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker

from .compose_cli import REPO

TEMPLATE = REPO / "infra" / "prefect" / "work-pool.json"


def template() -> dict:
    return json.loads(TEMPLATE.read_text())


def test_the_server_accepts_the_template() -> None:
    WorkPoolCreate(name="rodin-process", type=ProcessWorker.type, base_job_template=template())
    broken = template()
    broken["job_configuration"]["working_dir"] = "{{ workdir }}"
    with pytest.raises(ValueError, match="undeclared variable"):
        WorkPoolCreate(name="rodin-process", type=ProcessWorker.type, base_job_template=broken)


def test_it_is_the_process_template_with_the_image_folder() -> None:
    default, ours = ProcessWorker.get_default_base_job_template(), template()
    assert ours["job_configuration"] == default["job_configuration"]
    assert ours["variables"]["properties"].keys() == default["variables"]["properties"].keys()
    changed = {name for name, spec in ours["variables"]["properties"].items()
               if spec != default["variables"]["properties"][name]}
    assert changed == {"working_dir"}
    job = asyncio.run(ProcessJobConfiguration.from_template_and_values(ours, {}, client=object()))
    assert job.working_dir == Path("/opt/rodin") and job.stream_output is True
    overridden = asyncio.run(ProcessJobConfiguration.from_template_and_values(
        copy.deepcopy(ours), {"working_dir": "/tmp/elsewhere"}, client=object()))
    assert overridden.working_dir == Path("/tmp/elsewhere")


def test_the_image_has_that_folder() -> None:
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    assert "\nWORKDIR /opt/rodin\n" in dockerfile
    compose = (REPO / "docker-compose.yml").read_text()
    assert "--base-job-template infra/prefect/work-pool.json" in compose
