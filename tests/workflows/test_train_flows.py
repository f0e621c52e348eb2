"""The training flows (workflows.train_flows) under a temporary Prefect server, and ``rodin train``.

``train-all`` runs once on the synthetic corpus of ``test_train_data`` (frontal views and
statistics not yet prepared, its last subject held out): base, then upsampler on a local 2-CPU Ray (one after the
other below 8 CPUs), then the prior on the base encoder's latents; each publishes its loss curve and sample renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prefect.artifacts import Artifact

from rodin_core.datasets.errors import TrainDataError
from rodin_core.imaging import decode_png
from rodin_core.storage import open_store
from rodin_core.training import report as train_report
from workflows.cli import main
from workflows.train_flows import train_all, train_base, training_config
from workflows.train_worker import ResumeMismatchError

from ..training_corpus import TINY, make_corpus, tiny_config

HOLDOUT = ["corpus.subjects=9", "corpus.holdout_subjects=1"]
"""Subject 8, the corpus's last, is held out of training (paper §4.5, appendix C.5)."""
STEPS = [*HOLDOUT, "base.train.checkpoint_every=4", "base.train.log_every=2", "upsampler.train.checkpoint_every=4",
         "upsampler.train.log_every=2", "prior.train.checkpoint_every=4", "prior.train.log_every=2"]


@pytest.fixture(scope="module")
def trained(prefect_server: float, local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = make_corpus(tmp_path_factory.mktemp("train-all") / "store", tiny_config())
    summary = train_all(out=out, overrides=[*TINY, *STEPS], steps=4, cpus_per_worker=1)
    return out, summary


def test_training_config_sets_steps_and_workers_of_the_given_stages() -> None:
    cfg = training_config("tiny", None, ["base.train.lr=1e-3"], ("base", "prior"), steps=7, workers=2)
    assert (cfg.base.train.steps, cfg.base.train.workers, cfg.base.train.lr) == (7, 2, 1e-3)
    assert (cfg.prior.train.steps, cfg.prior.train.workers) == (7, 2)
    assert cfg.upsampler.train.steps == tiny_config().upsampler.train.steps


def test_loss_curve_is_a_png_of_the_history() -> None:
    history = [{"step": s, "loss": 1.0 / s, "mse": 0.5 / s} for s in range(1, 50)]
    image = decode_png(train_report.loss_curve_png(history, "train-base loss"))
    assert image.shape == (train_report.CURVE_SIZE[1], train_report.CURVE_SIZE[0], 3)
    assert len({tuple(p) for p in image.reshape(-1, 3)}) > 3  # axes, text and two coloured curves
    with pytest.raises(ValueError, match="no logged"):
        train_report.loss_curve_png([], "empty")


def test_train_all_trains_the_three_stages_and_publishes_them(trained: tuple[str, dict[str, Any]]) -> None:
    out, summary = trained
    assert summary["failed"] == {} and summary["data"]["frontal_shards_extracted"] == 3
    assert summary["data"]["computed"] and summary["data"]["subjects"] == 7  # 9 fitted, 1 failed, 1 held out
    store = open_store(out)
    for stage, flow_name in (("base", "train-base"), ("upsampler", "train-upsampler"),
                             ("prior", "train-latent-prior")):
        result = summary[stage]
        assert (result["start_step"], result["steps"], result["steps_run"]) == (0, 4, 4), result
        assert result["loss_first"] is not None and result["steps_per_s"] > 0
        assert store.stage("checkpoints").read_manifest(stage).extra["step"] == 4
        for artifact in ("loss", "samples"):
            assert Artifact.get(f"{flow_name}-{artifact}") is not None, (flow_name, artifact)
            assert (Path(out) / "reports" / f"{flow_name}-{artifact}.png").is_file()
        assert "| steps/s |" in (Path(out) / "reports" / f"{flow_name}.md").read_text()
    assert list(store.stage("latents").read_manifest("latents").subject_ids) == [0, 1, 2, 3, 5, 6, 7]
    # On 2 CPUs the stages train one after the other: upsampler after the base, the prior after both.
    assert summary["base"]["finished_at"] <= summary["upsampler"]["started_at"]
    assert summary["upsampler"]["finished_at"] <= summary["prior"]["started_at"]
    sheet = decode_png((Path(out) / "reports" / "train-base-samples.png").read_bytes())
    assert sheet.shape[1] == 6 * 24  # two subjects per row: input, fitted, sampled


def test_relaunch_with_another_network_is_refused_before_training(trained: tuple[str, dict[str, Any]]) -> None:
    out, _ = trained
    with pytest.raises(ResumeMismatchError, match=r"network.model_channels: checkpoint 8, config 16.*--fresh"):
        train_base(out=out, overrides=[*TINY, *STEPS, "base.unet.model_channels=16"], steps=6, cpus_per_worker=1)
    assert open_store(out).stage("checkpoints").read_manifest("base").extra["step"] == 4


def test_missing_triplanes_name_the_fit_command(prefect_server: float, tmp_path: Path) -> None:
    with pytest.raises(TrainDataError, match=r"no committed tri-planes under .*`rodin fit --renders"):
        train_base(out=str(tmp_path / "empty"), overrides=TINY)


def test_cli_train_validates_before_running(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "all", "--out", str(tmp_path), "--run-name", "x"]) == 2
    assert "--run-name names one stage's run" in capsys.readouterr().err
    assert main(["train", "base", "--out", str(tmp_path), "--set", "base.train.stepz=3"]) == 2
    assert "did you mean 'steps'" in capsys.readouterr().err
