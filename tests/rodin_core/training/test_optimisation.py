"""Optimisation shared by the stages (appendix B.1): seeding, warm-up, precision, gradient averaging across ranks."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from rodin_core.config import load_config
from rodin_core.training.optimisation import average_gradients, step_generator, warmup_lr
from rodin_core.training.registry import build_stage

from ...stage_data import small_config


def test_step_generator_depends_on_seed_rank_and_step():
    def draw(seed: int, rank: int, step: int) -> torch.Tensor:
        return torch.randn(4, generator=step_generator(seed, rank, step))

    assert torch.equal(draw(0, 0, 5), draw(0, 0, 5))
    assert not torch.equal(draw(0, 0, 5), draw(0, 0, 6))
    assert not torch.equal(draw(0, 0, 5), draw(0, 1, 5))
    assert not torch.equal(draw(0, 0, 5), draw(1, 0, 5))


def test_warmup_is_linear_then_constant():
    train = load_config("tiny", overrides=["base.train.warmup_steps=4", "base.train.lr=1e-3"]).base.train
    assert [round(warmup_lr(s, train), 8) for s in range(6)] == [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3]


def test_cpu_training_stays_fp32():
    cfg = small_config("base.train.precision=bf16")
    stage = build_stage("prior", cfg, None, latents=torch.randn(8, 32))
    assert stage._forward(torch.randn(2, 32), torch.tensor([1, 2])).dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in stage.modules["model"].parameters())


def _average_worker(rank: int, port: int, results: dict) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        first, second = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
        first.grad = torch.full((3,), float(rank + 1))
        if rank == 0:  # a parameter without a gradient on one rank counts as zeros
            second.grad = torch.full((2, 2), 4.0)
        average_gradients([first, second])
        results[rank] = (first.grad.tolist(), second.grad.tolist())
    finally:
        torch.distributed.destroy_process_group()


def test_gradients_are_averaged_over_ranks():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_average_worker, args=(port, results), nprocs=2, join=True, start_method="fork")
        assert results[0] == results[1] == ([1.5, 1.5, 1.5], [[2.0, 2.0], [2.0, 2.0]])

