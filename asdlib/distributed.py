"""Several processes (several GPUs) for the two heavy steps: adaptation and extraction.

Under ``torchrun`` every process knows its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
`init` joins them into one process group (NCCL when each process has a GPU, gloo on CPU).
Then:

- adaptation (`asdlib.adaptation.training.adapt`) is data parallel: every process draws the
  same global batch (same seed), computes the loss of its share (every ``world``-th example),
  and the gradients are summed over the processes before the one optimizer step each
  process takes, so every process keeps the same weights. The sum of the shares' size-weighted
  losses is the global batch's loss: the weights equal a single process's run up to the
  order of float additions (SpecAugment masks, drawn per process, are the exception).
  PyTorch's ``DistributedDataParallel`` wrapper is not used: it synchronises on
  ``forward()``, while the encoder is called through ``extract()`` in micro-batches, and
  it averages where the global-batch loss needs a sum; the gradient all-reduce it would do
  is done here directly, one flattened buffer per step.
- extraction (`asdlib.features.extract_features`) is sharded by store part (machine, split,
  channel): each process encodes its parts (balanced by clip count, deterministic), then
  all wait for each other. The store is the one a single process writes.

Rank 0 alone writes checkpoints and reports progress. Without ``torchrun`` (or with one
process) nothing changes. `asdlib.distributed_steps` is the command line that runs both
steps of a run folder under torchrun.
"""

from __future__ import annotations

import os

import numpy as np


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside an initialised process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init(device: str = "auto") -> tuple[int, int]:
    """Join the process group torchrun describes (env ``WORLD_SIZE`` > 1): NCCL when
    ``device`` resolves to CUDA (each process on ``cuda:LOCAL_RANK``), gloo otherwise.
    Returns (rank, world size); (0, 1) without torchrun."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return world()
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return world()


def local_device(device: str) -> str:
    """The device of this process: ``cuda:LOCAL_RANK`` for a CUDA request under torchrun,
    ``device`` otherwise."""
    if device in ("auto", "cuda") and world()[1] > 1:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        return "cpu" if device == "auto" else device
    return device


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def _comm_device():
    """Where small tensors must live for a collective: the current GPU under NCCL, else CPU."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_parameters(*modules) -> None:
    """Copy rank 0's parameters and buffers into every process (no-op in one process)."""
    if world()[1] == 1:
        return
    import torch.distributed as dist

    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, 0)


def sum_gradients(params) -> None:
    """Sum the gradients of ``params`` over the processes, in one flattened buffer per dtype
    and device. A parameter without a gradient in some process counts as zero there; one
    without a gradient in every process keeps none (the optimizer skips it, as it would in
    a single process)."""
    if world()[1] == 1:
        return
    import torch
    import torch.distributed as dist

    params = list(params)
    has = torch.tensor([float(p.grad is not None) for p in params], dtype=torch.float64,
                       device=_comm_device())
    dist.all_reduce(has)
    groups: dict = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()
    for p, count in zip(params, has.tolist()):
        if count == 0:
            p.grad = None


def sum_numbers(values) -> np.ndarray:
    """Element-wise sum of a small float vector over the processes."""
    values = np.asarray(values, dtype=np.float64)
    if world()[1] == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.from_numpy(values.copy()).to(_comm_device())
    dist.all_reduce(t)
    return t.cpu().numpy()


def assign_shards(sizes, n_shards: int) -> list[int]:
    """Shard of each item: largest first to the least loaded shard (ties: lowest index);
    deterministic, so every process computes the same assignment."""
    load = [0] * n_shards
    out = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        shard = min(range(n_shards), key=lambda s: (load[s], s))
        out[i] = shard
        load[shard] += sizes[i]
    return out
