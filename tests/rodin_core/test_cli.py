"""The `rodin` command: config printing, errors as one line with exit code 2, status and contact sheets."""

import json

import numpy as np
import pyarrow as pa
import pytest

from render.corpus import VIEWS_SCHEMA, VIEWS_TABLE
from rodin_core.cli import main
from rodin_core.imaging import decode_png, encode_png
from rodin_core.storage import open_store


def test_config_prints_the_resolved_config(capsys):
    assert main(["config", "--preset", "tiny", "--set", "render.views=7"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["preset"] == "tiny" and printed["render"]["views"] == 7


def test_bad_override_is_one_line_and_exit_code_2(capsys):
    assert main(["config", "--set", "render.viewz=7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "render.viewz" in err and "views" in err


def test_render_refuses_a_bad_config_before_starting_anything(tmp_path, capsys):
    assert main(["render", "--out", str(tmp_path / "data"), "--set", "render.resolution=2"]) == 2
    assert "render.resolution" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def _commit_fake_renders(root: str, subjects: list[int], colour: int) -> None:
    stage = open_store(root).stage("renders")
    rows = []
    for sid in subjects:
        for view in range(2):
            rgba = np.zeros((8, 8, 4), np.uint8)
            rgba[2:6, 2:6] = (colour, 0, sid, 255)
            rows.append({"subject_id": sid, "view_index": view, "png": encode_png(rgba), "c2w": np.eye(4).ravel().tolist(),
                         "intrinsics": np.eye(3).ravel().tolist(), "width": 8, "height": 8})
    writer = stage.begin(f"shard-{subjects[0]:06d}")
    writer.write_table(VIEWS_TABLE, pa.Table.from_pylist(rows, schema=VIEWS_SCHEMA))
    writer.commit(subjects, "test")


def test_status_and_contact_sheet(tmp_path, capsys):
    root = str(tmp_path / "data")
    assert main(["contact-sheet", "--out", root, "--dest", str(tmp_path / "s.png")]) == 1
    assert "no committed renders shard" in capsys.readouterr().err
    _commit_fake_renders(root, [0, 1], colour=200)
    _commit_fake_renders(root, [2], colour=100)
    assert main(["status", "--out", root]) == 0
    assert "2 committed shards, 3 subjects" in capsys.readouterr().out
    dest = tmp_path / "sheet.png"
    assert main(["contact-sheet", "--out", root, "--dest", str(dest), "--columns", "2", "--no-labels"]) == 0
    sheet = decode_png(dest.read_bytes())
    assert sheet.shape[:2] == (16, 16)  # 3 tiles of 8 px in 2 columns -> 2 rows
    assert tuple(sheet[4, 4, :3]) == (200, 0, 0) and tuple(sheet[4, 12, :3]) == (200, 0, 1)
    assert tuple(sheet[12, 4, :3]) == (100, 0, 2)
    assert tuple(sheet[12, 12, :3]) == (255, 255, 255)  # empty cell is background


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as exc:
        main(["paint"])
    assert exc.value.code == 2
