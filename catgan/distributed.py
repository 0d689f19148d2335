"""Training on several processes, started by torchrun: ``torchrun --nproc-per-node N -m catgan train ...``.

Each process trains on its slice of every global batch with DistributedDataParallel (NCCL between
GPUs, gloo between CPU processes). ``--batch-size`` is per process, so the global batch holds N
times as many images and an epoch (one pass over the unlabelled images) takes N times fewer
steps. N processes with batch B compute what one process with batch N*B computes:

- the labelled subset and the order of the batches come from the run's seed in every process
  (checked when training starts); each process takes its slice of each global batch;
- batch normalisation, in D and G, normalises with the statistics of the global batch
  (`GlobalBatchNorm`: the sums are all-reduced, with their gradients);
- the losses are computed from the logits of the global batch, gathered with their gradients
  (`gather`), so that the marginal entropy H[p_bar], a statistic of the whole batch, keeps its
  meaning (averaging per-process entropies would not);
- DistributedDataParallel averages the gradients, which the gathered losses scale to match.

Each process draws its own latent vectors and D's noise (from the seed and its rank), so the
processes' samples are independent. Only the process of rank 0 writes files and prints.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from catgan.config import CatGANError

__all__ = ["DistributedCatGAN", "GlobalBatchNorm", "ProcessGroup", "convert_batch_norm", "gather"]


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among those torchrun started."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> "ProcessGroup | None":
        """The group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK); None
        for a single process."""
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
            if world_size <= 1:
                return None
            rank = int(os.environ["RANK"])
            local_rank = int(os.environ.get("LOCAL_RANK", rank))
        except (KeyError, ValueError) as err:
            raise CatGANError(f"WORLD_SIZE is set but RANK or LOCAL_RANK is missing or not a number ({err}); "
                              "start several processes with torchrun") from None
        return cls(rank, world_size, local_rank)

    def device(self, device: torch.device) -> torch.device:
        """The device of this process: its local rank's GPU for CUDA, else ``device``."""
        if device.type != "cuda":
            return device
        if device.index is not None and self.world_size > 1:
            raise CatGANError(f"`device` {device} names one GPU, but {self.world_size} processes were started; "
                              "use cuda (or auto): each process takes the GPU of its local rank")
        if self.local_rank >= torch.cuda.device_count():
            raise CatGANError(f"process of local rank {self.local_rank} has no GPU: only "
                              f"{torch.cuda.device_count()} are visible; start at most that many per node")
        return torch.device("cuda", self.local_rank)

    def start(self, device: torch.device) -> None:
        """Join the other processes (NCCL for CUDA, gloo for the CPU), unless already joined."""
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL's object collectives use the current device
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            try:
                dist.init_process_group(backend)
            except (ValueError, RuntimeError) as err:
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise CatGANError(f"cannot join the other {self.world_size - 1} processes ({backend}): {first_line}; "
                                  "start them with torchrun, which sets MASTER_ADDR and MASTER_PORT") from None
        if dist.get_world_size() != self.world_size or dist.get_rank() != self.rank:
            raise CatGANError("the process group already started differs from the one torchrun describes")

    def seed(self, seed: int, *more: int) -> int:
        """A seed for this process's own draws (latents, noise), from the run's seed and its rank."""
        state = np.random.SeedSequence([seed, self.rank, *more]).generate_state(2, np.uint32)
        return (int(state[0]) << 31 | int(state[1]) >> 1) % 2**63

    def check_agreement(self, what: str, value: Any) -> None:
        """Refuse to train when the processes differ in ``value`` (for instance the labelled subset)."""
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        differing = [rank for rank, other in enumerate(values) if other != values[0]]
        if differing:
            raise CatGANError(f"the processes disagree about {what}: rank {differing[0]} differs from rank 0")

    def largest(self, values: list[int], device: torch.device) -> list[int]:
        """Each of ``values`` maximised over the processes (a host synchronisation: call it rarely)."""
        tensor = torch.tensor(values, dtype=torch.int64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()


def digest(array: np.ndarray) -> str:
    """A short SHA-256 of an array's bytes (to compare it across processes)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _summed(x: Tensor) -> Tensor:
    """A copy of ``x`` summed over the processes."""
    total = x.contiguous().clone()
    dist.all_reduce(total)
    return total


class _Gather(torch.autograd.Function):
    """Concatenate equal-sized tensors of every process along dim 0; the gradient of each slice
    goes back to its process, summed over the processes' losses."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        rank = dist.get_rank()
        return _summed(grad)[rank * ctx.rows : (rank + 1) * ctx.rows]


class _AllReduce(torch.autograd.Function):
    """The sum of a tensor over the processes; its gradient is the sum of theirs."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return _summed(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return _summed(grad)


def gather(x: Tensor) -> Tensor:
    """``x`` (B, ...) of every process concatenated in rank order: (world_size * B, ...), carrying
    gradients back to each process's slice. Every process must pass the same B."""
    return _Gather.apply(x)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation (of (B, C) or (B, C, H, W) inputs) whose batch statistics, in training,
    are those of the global batch of all processes; the same as `nn.BatchNorm1d`/`2d` otherwise.

    Mean and variance come from all-reduced sums (float32, or float64 for float64 inputs) with
    their gradients, the sample count summed with them; the running statistics are updated as
    torch's batch norm does (the unbiased variance, ``momentum``), and left alone when
    ``track_running_stats`` is off (see `catgan.models.frozen_batchnorm_statistics`).
    Its parameters and buffers have batch norm's names, so checkpoints are interchangeable.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected a 2-D or 4-D input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        values = x.to(torch.promote_types(x.dtype, torch.float32))
        local_count = values.new_full((1,), x.numel() // x.shape[1])
        sums = _AllReduce.apply(torch.cat([values.sum(dims), local_count]))  # per-channel sums, then the count
        count = sums[-1].detach()
        mean = sums[:-1] / count
        centred = values - mean.view(shape)
        variance = _AllReduce.apply(centred.pow(2).sum(dims)) / count
        y = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(variance * count / (count - 1).clamp(min=1), factor)
        return y.to(x.dtype)


def convert_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every batch-norm layer in ``module`` by a `GlobalBatchNorm` holding the same
    parameters and buffers (the same tensors: optimisers built before keep working)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats, device="meta")
            for key in ("weight", "bias"):
                setattr(replacement, key, getattr(child, key))
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                replacement.register_buffer(key, getattr(child, key))
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            convert_batch_norm(child)
    return module


class DistributedCatGAN:
    """A `CatGAN`'s networks wrapped in DistributedDataParallel: what the step functions of
    `catgan.steps` are given in place of the model when several processes train."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model
        ids = [device.index] if device.type == "cuda" else None
        # the batch-norm running statistics come from the global batch, the same in every process:
        # nothing to broadcast at each forward pass
        parameters = inspect.signature(nn.parallel.DistributedDataParallel).parameters
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in parameters
                   else {"broadcast_buffers": False})
        wrap = functools.partial(nn.parallel.DistributedDataParallel, device_ids=ids, **no_sync)
        self.discriminator, self.generator = wrap(model.discriminator), wrap(model.generator)

    @property
    def num_clusters(self) -> int:
        return self.model.num_clusters

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.model.sample_latent(n, generator)
