"""The Blender worker process: what it loads and how it checks the spec it is handed."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from render.blender_worker import SpecError, parse_spec
from rodin_core.config.corpus import RenderConfig


def spec(**render: object) -> dict:
    return {"subject_ids": [0, 1], "seed": 0, "render": {**dataclasses.asdict(RenderConfig(views=4)), **render},
            "output_dir": "/tmp/out", "asset_dir": None, "asset_catalog": {}}


def test_the_worker_process_does_not_load_torch():
    """Each shard's Blender process reads only the render section: loading the networks' torch there cost
    memory (about 0.5 GB per process) and start-up time for nothing."""
    code = "import sys, render.blender_worker; print(sorted(m for m in ('torch', 'open_clip') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_spec_render_section_is_read_as_a_render_config():
    parsed = parse_spec(spec(resolution=32))
    assert parsed.render == RenderConfig(views=4, resolution=32)


@pytest.mark.parametrize(("render", "message"), [
    ({"resolutionn": 32}, r"unknown config key 'render.resolutionn' \(did you mean 'resolution'\?\)"),
    ({"views": 0}, r"bad value for render.views: 0 is outside the valid range"),
    ({"views": "four"}, r"bad value for render.views: 'four' is not a int"),
])
def test_bad_render_sections_are_refused_with_the_field(render, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(spec(**render))
