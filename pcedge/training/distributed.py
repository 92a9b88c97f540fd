"""One training process or many: the torchrun environment, the device each process uses, and rank 0's role.

``torchrun --nproc-per-node N -m pcedge finetune ...`` starts N copies with RANK, WORLD_SIZE and LOCAL_RANK set
(and MASTER_ADDR/PORT, also across machines with ``--nnodes`` and a rendezvous endpoint). Each joins one process
group (NCCL on GPUs, gloo on CPUs) and trains on its share of every batch through DistributedDataParallel; rank 0
alone validates, writes checkpoints, logs, progress and the exported model. A plain ``pcedge finetune`` is the
world of one, with no process group at all.
"""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..util.optional import require
from .training_state import weights_sha256

torch = require("torch", "fine-tuning")

COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)  # rank 0 validates (certification tables) while the others wait


@dataclass
class Processes:
    """This process's place: ``rank`` of ``world``, on ``device``."""

    rank: int = 0
    world: int = 1
    device: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over every rank (the values themselves when alone)."""
        if not self.distributed:
            return values
        tensor = self._wire(torch.tensor(values, dtype=torch.float64))
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (a stop signal that reached one rank stops them all)."""
        if not self.distributed:
            return flag
        tensor = self._wire(torch.tensor([int(flag)]))
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return bool(tensor.item())

    def gather(self, tensor: Any) -> Any:
        """Every rank's ``tensor`` (the same shape on each), concatenated in rank order along the first axis, on the CPU."""
        if not self.distributed:
            return tensor.cpu()
        local = self._wire(tensor.contiguous())
        parts = [torch.empty_like(local) for _ in range(self.world)]
        torch.distributed.all_gather(parts, local)
        return torch.cat(parts).cpu()

    def _wire(self, tensor: Any) -> Any:
        """``tensor`` where the backend takes it: the GPU for NCCL, the CPU for gloo."""
        return tensor.to(self.device) if self.device.type == "cuda" else tensor.cpu()

    def union(self, values: set[int]) -> list[int]:
        """The sorted union of every rank's ``values`` (e.g. the unreadable images each rank met)."""
        if not self.distributed:
            return sorted(values)
        gathered: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(gathered, sorted(values))
        return sorted(set().union(*gathered))

    def share_buffers(self, module: Any) -> None:
        """Rank 0's buffers (BatchNorm running statistics) to every rank. DDP broadcasts them at the start of each forward,
        so after the last step each rank holds statistics of its own last batch; an epoch ends with rank 0's everywhere."""
        if self.distributed:
            for buffer in module.buffers():
                torch.distributed.broadcast(buffer.data, src=0)

    def identical(self, module: Any) -> bool:
        """True when every rank holds bit-identical weights and buffers (DDP's promise, checked after each epoch)."""
        if not self.distributed:
            return True
        gathered: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(gathered, weights_sha256(module))
        return len(set(gathered)) == 1

    def close(self) -> None:
        """Leave the process group. Garbage is collected first, while the group is alive: DistributedDataParallel's hooks
        make reference cycles, and a DDP reducer freed at interpreter exit, after its group, aborts the process (gloo:
        "terminate called without an active exception", seen in about one torchrun run in ten here)."""
        if self.distributed and torch.distributed.is_initialized():
            gc.collect()
            torch.distributed.destroy_process_group()


def parse_device(text: str) -> Any:
    """``cpu``, ``cuda`` or ``cuda:N`` as a torch device, refused with the fix when CUDA is not there."""
    if text != "cpu" and not (text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit())):
        raise ConfigError(f"--device {text!r}: give cpu, cuda or cuda:N")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {text}: torch sees no CUDA device (CPU-only torch {torch.__version__}, or no GPU/driver); "
                              "use --device cpu")
        index = int(text[5:]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(text)


def join(device_text: str, batch_size: int) -> Processes:
    """This process's ``Processes``: alone, or in torchrun's group (one GPU per local rank with CUDA). A global batch
    that the world size does not divide is refused before any process group forms."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = parse_device(device_text)
    if world <= 1:
        return Processes(0, 1, device)
    if batch_size % world:
        raise ConfigError(f"--batch-size {batch_size} is not divisible by the {world} processes torchrun started: give a multiple "
                          f"of {world} (e.g. {max(world, batch_size // world * world)}); each process takes batch/{world} images per step")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local} but {torch.cuda.device_count()} GPUs here: --nproc-per-node at most the GPU count")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return Processes(torch.distributed.get_rank(), world, device)
