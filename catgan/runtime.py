"""Where and how this process computes, in the spirit of Lightning Fabric: the device, autocast,
the process group (gathering across processes, no-sync, which process writes), and the random
state the steps draw from."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

from catgan import performance
from catgan.config import CatGANError, TrainConfig, check_device_name
from catgan.distributed import DistributedCatGAN, ProcessGroup, convert_batch_norm
from catgan.distributed import gather as gather_across_processes
from catgan.kernels import NoiseStreams
from catgan.models import CatGAN

__all__ = ["Runtime", "resolve_device"]


class Runtime:
    """This process's device, autocast and random state, and its place among several processes.

    Args:
        config: the run's configuration (``device``, ``precision``, ``compile``).
        group: this process's place among several started by torchrun (see
            `catgan.distributed`), which the runtime joins; None computes in this process alone.
    """

    def __init__(self, config: TrainConfig, group: ProcessGroup | None = None) -> None:
        self.group = group
        self.device = resolve_device(config.device)
        if group is not None:
            if config.compile != "off":
                raise CatGANError("`compile` with several processes is untested; train them without it")
            self.device = group.device(self.device)
            group.start(self.device)
        if config.precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise CatGANError(f"`precision` bf16: {torch.cuda.get_device_name(self.device)} has no bfloat16 support; "
                              "use fp32")
        # D's noise on the CPU: drawn on every thread torch computes with (compiled networks draw their own)
        self.noise = performance.noise_streams(self.device, config.compile)
        self.autocast = performance.autocast_for(self.device, config.precision)
        # concatenates a tensor across the processes, with its gradient (None: one process)
        self.gather = gather_across_processes if group is not None else None

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints (rank 0, or the only one)."""
        return self.group is None or self.group.is_main

    @property
    def world_size(self) -> int:
        """The number of processes training together (1 without torchrun)."""
        return self.group.world_size if self.group is not None else 1

    def describe(self) -> str:
        return _device_description(self.device)

    def distribute(self, model: CatGAN) -> CatGAN | DistributedCatGAN:
        """What the steps train: ``model``, or with several processes its networks with global batch
        norm, wrapped for DistributedDataParallel (whose ``no_sync`` the steps use)."""
        if self.group is None:
            return model
        convert_batch_norm(model)
        return DistributedCatGAN(model, self.device)

    def my_slice(self, index: Tensor) -> Tensor:
        """This process's slice of a global batch's ``index``."""
        if self.group is None:
            return index
        size = len(index) // self.group.world_size
        return index[self.group.rank * size : (self.group.rank + 1) * size]

    def seed(self, seed: int) -> None:
        """Seed what the steps draw from: torch's generator (latents, and D's noise on a GPU or with
        one thread) and the CPU's noise streams."""
        torch.manual_seed(seed)
        if self.noise is not None:
            self.noise.seed(seed)

    def process_seed(self, seed: int, *more: int) -> int:
        """``seed``, or with several processes one derived for this process from it and ``more``."""
        return seed if self.group is None else self.group.seed(seed, *more)

    def rng_state(self) -> dict[str, Any]:
        return _rng_state(self.device, self.noise)

    def set_rng_state(self, state: dict[str, Any]) -> str | None:
        """Restore `rng_state`'s ``state``; returns a note when D's noise cannot continue as it was drawn."""
        if _set_rng_state(state, self.device, self.noise):
            return None
        return (f"note: this process draws D's noise from other streams than the checkpoint's ({_streams(self.noise)} "
                f"against {_streams(state.get('noise'))}: another thread count or catgan version), so the run will "
                "not repeat an uninterrupted one exactly")

    def storage(self, x: Tensor) -> torch.device:
        return _storage_device(x, self.device)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; a CUDA device that is absent is an error."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CatGANError(f"device {name} was asked for, but CUDA is not available here; use `device` cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CatGANError(f"device {name} was asked for, but only {torch.cuda.device_count()} CUDA devices exist")
    return device


def _rng_state(device: torch.device, noise: NoiseStreams | None) -> dict[str, Any]:
    """Every random state training may draw from: torch's (CPU and CUDA), the noise streams',
    Python's and NumPy's."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    if noise is not None:
        state["noise"] = noise.get_state()
    return state


def _streams(noise: NoiseStreams | list | None) -> str:
    count = len(noise.generators if isinstance(noise, NoiseStreams) else noise or ())
    return f"{count} streams" if count else "torch's generator"


def _set_rng_state(state: dict[str, Any], device: torch.device, noise: NoiseStreams | None) -> bool:
    """Restore `_rng_state`'s ``state``. Returns False when D's noise cannot continue as it was
    drawn: the state holds no noise streams or another number of them (these are then seeded
    afresh from the state), or it holds streams and this process has none."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda"])
    if noise is None:
        return "noise" not in state
    if len(state.get("noise", ())) == len(noise.generators):
        noise.set_state(state["noise"])
        return True
    restored = torch.Generator()
    restored.set_state(state["torch"])
    noise.seed(int(torch.randint(2**62, (), generator=restored)))
    return False


def _device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


def _storage_device(x: Tensor, device: torch.device) -> torch.device:
    """Where training images ``x`` are held: on the training device when they take at most half
    of its free memory, else in host memory."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    return device if x.element_size() * x.nelement() <= free // 2 else torch.device("cpu")


