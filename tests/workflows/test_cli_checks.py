"""The `rodin` command checks its flags, config values and inputs before Prefect or Ray start, and stops on
SIGTERM or Ctrl-C with one line.

Each command runs in its own interpreter, which reports the heavy modules it imported: a flag error must come
before torch is imported (well within a second), a config or input error before Prefect and Ray are.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from rodin_core.config import ConfigError, load_config
from rodin_core.datasets.layout import VIEWS_TABLE
from rodin_core.datasets.renders import VIEWS_SCHEMA
from rodin_core.fitting.shard_job import torch_threads
from rodin_core.imaging import encode_png
from rodin_core.storage import open_store
from workflows.flow_config import check_local_capacity

from ..generation_data import make_generation_root

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE = ("import sys\nfrom workflows.cli import main\ncode = main(sys.argv[1:])\n"
         "print(sorted(m for m in ('torch', 'prefect', 'ray') if m in sys.modules))\nsys.exit(code)")
"""Runs ``rodin ARGS`` and prints which of torch, Prefect and Ray it imported."""


def rodin(*args: str) -> tuple[int, str, list[str]]:
    """Exit code, stderr and the heavy modules imported by ``rodin ARGS`` in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=300, check=False)
    return done.returncode, done.stderr, ast.literal_eval(done.stdout.strip().splitlines()[-1])


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def commit_renders(root: str, firsts: tuple[int, ...]) -> str:
    """Commit a renders shard of 4 subjects (8 px, 2 views each) from each id of ``firsts`` under ``root``."""
    stage = open_store(root).stage("renders")
    for first in firsts:
        rows = []
        for sid in range(first, first + 4):
            for view in range(2):
                rgba = np.zeros((8, 8, 4), np.uint8)
                rgba[2:6, 2:6] = (200, 0, sid, 255)
                rows.append({"subject_id": sid, "view_index": view, "png": encode_png(rgba),
                             "c2w": np.eye(4).ravel().tolist(), "intrinsics": np.eye(3).ravel().tolist(),
                             "width": 8, "height": 8})
        writer = stage.begin(f"shard-{first:06d}")
        writer.write_table(VIEWS_TABLE, pa.Table.from_pylist(rows, schema=VIEWS_SCHEMA))
        writer.commit(list(range(first, first + 4)), "test")
    return root


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A renders stage of two committed shards of 4 subjects, ids 0..7."""
    return commit_renders(str(tmp_path_factory.mktemp("checks") / "data"), (0, 4))


@pytest.fixture(scope="module")
def generation_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    with torch_threads(1):
        return make_generation_root(tmp_path_factory.mktemp("checks-generation") / "data")


@pytest.mark.parametrize(("args", "message"), [
    (["render", "--subjects", "-3"], ("rodin render: error: argument --subjects: must be a positive integer, got -3; "
                                      "see `rodin render --help`")),
    (["train", "base", "--steps", "-5"], "rodin train: error: argument --steps: must be a positive integer, got -5"),
    (["fit", "--renders", "MISSING"], ("rodin fit: --renders MISSING is no folder; pass the dataset root `rodin "
                                       "render --out` wrote")),
    (["fit", "--renders", "RENDERS", "--shards", "-1"], "argument --shards: must be an integer >= 0, got -1"),
    (["fit", "--renders", "RENDERS", "--target-psnr", "nan"], "argument --target-psnr: must be a finite number"),
    (["sample", "--n", "0"], "rodin sample: error: argument --n: must be a positive integer, got 0"),
    (["sample", "--cfg", "inf"], "argument --cfg: must be a finite number, got 'inf'"),
    (["paint"], "rodin: error: argument command: invalid choice: 'paint'"),
])
def test_a_bad_flag_is_one_line_before_torch_is_imported(args: list[str], message: str, renders: str,
                                                         tmp_path: Path) -> None:
    args = [{"MISSING": str(tmp_path / "missing"), "RENDERS": renders}.get(a, a) for a in args]
    if args[0] in ("render", "train", "sample"):
        args += ["--out", str(tmp_path / "out")]
    code, err, imported = rodin(*args)
    message = message.replace("MISSING", str(tmp_path / "missing"))
    assert code == 2 and message in one_line(err)
    assert imported == []  # nothing heavy: the answer comes well within a second


@pytest.mark.parametrize(("args", "message"), [
    (["config", "--set", "fit.target_psnr=nan"], ("rodin: config error: bad value for fit.target_psnr: 'nan' is not "
                                                  "a finite number")),
    (["train", "base", "--out", "RENDERS", "--set", "base.train.lr=nan"], "base.train.lr: 'nan' is not a finite"),
    (["train", "base", "--out", "RENDERS", "--workers", "1000"], ("base.train.workers: 1000 is outside the valid "
                                                                  "range [1, 256]")),
    (["train", "text-embedding", "--out", "RENDERS", "--workers", "2"], ("rodin train text-embedding: --workers "
                                                                         "applies to the diffusion stages only")),
    (["train", "text-embedding", "--out", "RENDERS", "--set", "text_embedding.train.holdout_subjects=1"],
     "rodin: config error: bad value for text_embedding.train.holdout_subjects: 1 is outside the valid range [2, inf]"),
    (["render", "--out", "OUT", "--set", "render.views=1000000000"], ("render.views: 1000000000 is outside the valid "
                                                                      "range [1, 4096]")),
    (["fit", "--renders", "RENDERS", "--shards", "99"], ("rodin fit: shards [99] are not fitting shards: rendered "
                                                         "subject ids 0..7 in shards of fit.shard_size=4 give "
                                                         "indices 0..1")),
    (["fit", "--renders", "OUT"], "rodin fit: no committed renders shard under"),
    (["sample", "--out", "GENERATION", "--n", "100000000"], ("rodin: n=100000000 is more than the 256 avatars one "
                                                             "request may hold")),
    (["sample", "--out", "GENERATION", "--steps", "100000000"], ("rodin: steps=100000000 is more than the 40 "
                                                                 "diffusion steps the base stage was trained with")),
])
def test_a_bad_value_or_input_is_one_line_before_prefect_or_ray_start(args: list[str], message: str, renders: str,
                                                                      generation_root: str, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    places = {"RENDERS": renders, "OUT": str(tmp_path / "out"), "GENERATION": generation_root}
    code, err, imported = rodin(*(places.get(a, a) for a in args))
    assert code == 2 and message in one_line(err)
    assert "prefect" not in imported and "ray" not in imported
    assert not (tmp_path / "out" / "renders").exists() and not (Path(generation_root) / "generated").exists()


def test_rodin_fit_refuses_renders_without_phase_a_subjects(tmp_path: Path) -> None:
    root = commit_renders(str(tmp_path / "data"), (4,))  # subjects 0..3 (phase A of the tiny preset) not rendered
    code, err, imported = rodin("fit", "--renders", root, "--out", str(tmp_path / "fitted"))
    assert code == 2 and one_line(err) == (
        f"rodin fit: phase A fits the decoder on subjects 0..3 (fit.shared_subjects), but no committed renders shard "
        f"of {root}/renders holds subjects 0..3; re-render them with the options the corpus was rendered with "
        f"(`rodin render --out {root}`), then fit again\n")
    assert "prefect" not in imported and "ray" not in imported
    assert not (tmp_path / "fitted").exists()


def test_rodin_train_refuses_more_workers_than_the_local_machine_has(renders: str) -> None:
    cpus = os.cpu_count() or 1
    code, err, imported = rodin("train", "base", "--out", renders, "--workers", str(cpus + 1))
    assert code == 2 and "prefect" not in imported and "ray" not in imported
    assert one_line(err) == (f"rodin: config error: base.train.workers={cpus + 1} needs {cpus + 1} CPUs, this machine "
                             f"has {cpus}; lower the workers (--workers) or pass --ray-address of a larger Ray cluster\n")


def test_training_workers_must_fit_a_local_ray() -> None:
    cfg = load_config("tiny", None, ["base.train.workers=2", "upsampler.train.workers=2"])
    check_local_capacity(cfg, ("base",), cpus=2, gpus=0)
    with pytest.raises(ConfigError, match=r"^base.train.workers=2 x 2 CPUs \(--cpus-per-worker\) needs 4 CPUs, this "
                                          r"machine has 2; lower the workers"):
        check_local_capacity(cfg, ("base",), cpus=2, gpus=0, cpus_per_worker=2)
    # Below SIDE_BY_SIDE_MIN_CPUS (8) base and upsampler train one after the other: each alone must fit.
    check_local_capacity(cfg, ("base", "upsampler", "prior"), cpus=3, gpus=0)
    wide = load_config("tiny", None, ["base.train.workers=4", "upsampler.train.workers=5"])
    with pytest.raises(ConfigError, match=r"^upsampler.train.workers=5 needs 5 CPUs, this machine has 4"):
        check_local_capacity(wide, ("base", "upsampler", "prior"), cpus=4, gpus=0)
    # From 8 CPUs on they train side by side: together they must fit; the prior runs after them.
    with pytest.raises(ConfigError, match=r"^base.train.workers=4 \+ upsampler.train.workers=5 \(side by side\) need "
                                          r"9 CPUs, this machine has 8"):
        check_local_capacity(wide, ("base", "upsampler", "prior"), cpus=8, gpus=0)
    check_local_capacity(wide, ("base", "upsampler", "prior"), cpus=9, gpus=0)
    gpu = load_config("tiny", None, ["prior.train.workers=2", "prior.train.use_gpu=true"])
    with pytest.raises(ConfigError, match=r"prior.train.workers=2 with use_gpu needs 2 GPUs, this machine has 1"):
        check_local_capacity(gpu, ("prior",), cpus=8, gpus=1)


STALLED = ("import signal, sys, time\nfrom workflows import cli\n"
           "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
           "def stalled(args):\n    print('started', flush=True)\n    time.sleep(120)\n    return 0\n"
           "cli._render = stalled\nsys.exit(cli.main(['render', '--out', sys.argv[1]]))")
"""``rodin render`` whose work never ends. Ctrl-C is a KeyboardInterrupt in it as in a terminal, even when the tests
run in the background (where a shell starts them with SIGINT ignored)."""


@pytest.mark.parametrize(("stop", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_sigterm_and_ctrl_c_stop_a_command_with_one_line(stop: signal.Signals, code: int, name: str,
                                                         tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", STALLED, str(tmp_path)], cwd=REPO_ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.readline() == "started\n"
        start = time.monotonic()
        process.send_signal(stop)
        _, err = process.communicate(timeout=30)
        assert time.monotonic() - start < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code
    assert one_line(err) == (f"rodin render: stopped by {name}; what was committed is kept, run the same command "
                             "again to go on\n")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def test_sigterm_stops_a_long_sampling_run_and_its_flow_run(generation_root: str, tmp_path: Path) -> None:
    """`rodin sample` of many avatars on the embedded Prefect server: SIGTERM ends it within seconds, the flow run
    is marked Crashed, the command ends with one line of its own and takes its temporary server with it."""
    args = ["sample", "--out", generation_root, "--outputs", str(tmp_path / "outputs"), "--n", "256", "--views", "1"]
    process = subprocess.Popen([sys.executable, "-m", "workflows.cli", *args], cwd=REPO_ROOT, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PREFECT_LOGGING_LEVEL": "INFO"})
    children: set[int] = set()
    try:
        for line in process.stderr:
            children.update(_children(process.pid))
            if "avatar 2/256 sampled" in line:
                break
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
        seconds = time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143 and seconds < 15, (seconds, rest)
    lines = rest.strip().splitlines()
    assert "Traceback" not in rest and any("Finished in state Crashed" in line for line in lines)
    ours = [line for line in lines if line.startswith("rodin")]
    assert ours == ["rodin sample: stopped by SIGTERM; what was committed is kept, run the same command again to go on"]
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert alive == []
    assert not (tmp_path / "outputs" / "generated" / "manifests").exists()
