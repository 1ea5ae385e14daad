"""Under DDP (2 CPU processes, gloo) the loss sees the global batch: the gradients two ranks get
after DDP's averaging equal the one-process gradients of the whole batch."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wit_builder.clip.model import clip_loss

BATCH, DIM = 6, 5


def features():
    g = torch.Generator().manual_seed(0)
    return (torch.nn.functional.normalize(torch.randn(BATCH, DIM, generator=g), dim=1),
            torch.nn.functional.normalize(torch.randn(BATCH, DIM, generator=g), dim=1))


def _global_loss_and_grads():
    img, txt = (t.clone().requires_grad_() for t in features())
    scale = torch.tensor(7.0, requires_grad=True)
    loss = clip_loss(img, txt, scale)
    loss.backward()
    return loss.item(), img.grad, txt.grad, scale.grad


def _rank(rank: int, world: int, tmp: str):
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    try:
        rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        img, txt = (t[rows].clone().requires_grad_() for t in features())
        scale = torch.tensor(7.0, requires_grad=True)
        loss = clip_loss(img, txt, scale)
        loss.backward()
        # what DDP does to the gradient of a shared parameter: average it over ranks
        scale_grad = scale.grad.reshape(1)
        dist.all_reduce(scale_grad)
        torch.save((loss.item(), img.grad, txt.grad, scale_grad / world), f"{tmp}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_the_global_batch_loss_and_gradients(tmp_path):
    world = 2
    # spawn, not fork: a child forked from a process whose torch threads already ran can hang
    mp.start_processes(_rank, args=(world, str(tmp_path)), nprocs=world, start_method="spawn")
    results = {r: torch.load(tmp_path / f"{r}.pt") for r in range(world)}
    loss, img_grad, txt_grad, scale_grad = _global_loss_and_grads()
    assert abs(sum(r[0] for r in results.values()) / world - loss) < 1e-5
    # A rank's features carry `world` times their rows' global gradient: DDP's averaging over
    # ranks then leaves exactly the global-batch gradient on the shared parameters.
    half = BATCH // world
    for rank, (_, ig, tg, sg) in results.items():
        rows = slice(rank * half, (rank + 1) * half)
        assert torch.allclose(ig, world * img_grad[rows], atol=1e-6)
        assert torch.allclose(tg, world * txt_grad[rows], atol=1e-6)
        assert torch.allclose(sg, scale_grad.reshape(1), atol=1e-6)
    assert os.environ.get("RANK") is None  # the test leaves no process group behind
