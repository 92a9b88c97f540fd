"""Streamed training data (pcedge.training.training_data): the epoch sampler's split between ranks and mid-epoch start,
items that are the same in any loader worker, seeded augmentation, the held-out split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="training needs torch (the [export] extra)")

from pcedge.errors import ConfigError  # noqa: E402
from pcedge.training.training_data import EpochSampler, TrainingImages, make_loader, split_held_out  # noqa: E402
from tests.conftest import FASHION  # noqa: E402

needs_fashion = pytest.mark.skipif(not (FASHION / "t10k-images-idx3-ubyte.gz").exists(),
                                   reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist; make system-deps)")


@given(size=st.integers(1, 60), world=st.integers(1, 4), seed=st.integers(0, 99), epoch=st.integers(0, 5), data=st.data())
def test_sampler_ranks_share_one_permutation_and_resume_mid_epoch(size, world, seed, epoch, data):
    per_rank = []
    for rank in range(world):
        sampler = EpochSampler(size, seed=seed, rank=rank, world=world)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
        start = data.draw(st.integers(0, len(per_rank[-1])))
        sampler.set_epoch(epoch, start=start)
        assert list(sampler) == per_rank[-1][start:] and len(sampler) == len(per_rank[-1]) - start
    assert len({len(r) for r in per_rank}) == 1  # every rank takes as many steps (DDP needs it)
    every = sorted(i for r in per_rank for i in r)
    assert set(every) == set(range(size)) and len(every) == -(-size // world) * world  # all images, padded to a multiple of world


@needs_fashion
def test_items_are_the_same_in_any_worker_and_augmentation_is_seeded():
    from pcedge.evaluation.datasets import load_dataset
    from pcedge.export import load_model

    spec = load_model("fashion-cnn").preprocessing({})
    dataset = load_dataset(FASHION, split="test")
    images = TrainingImages(dataset, spec, np.arange(64), augment=True, seed=5)
    batches = {}
    for workers in (0, 2):
        sampler = EpochSampler(64, seed=1)
        batches[workers] = [b for b in make_loader(images, sampler, 16, workers=workers, pin_memory=False)]
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    first = images[3][0]
    images.set_epoch(1)
    assert not torch.equal(first, images[3][0])  # another epoch, another crop
    images.set_epoch(0)
    assert torch.equal(first, images[3][0])
    kept, held = split_held_out(100, 0.1, 0)
    assert len(held) == 10 and not set(kept) & set(held) and len(kept) + len(held) == 100
    with pytest.raises(ConfigError, match="--val-fraction"):
        split_held_out(10, 1.5, 0)


class SignalDispositions(torch.utils.data.Dataset):
    """Items that say how the loader worker reading them handles the stop signals."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        import signal

        return torch.tensor([signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)])


def test_loader_workers_ignore_the_stop_signals_the_trainer_handles():
    """A signal sent to every process of a job must not kill the workers under a step the trainer is finishing."""
    batches = list(make_loader(SignalDispositions(), None, 1, workers=1, pin_memory=False))
    assert all(bool(batch.all()) for batch in batches)
