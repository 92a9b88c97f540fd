"""Greedy worst two-mask views (pcedge.training.greedy_masks): the search against brute force written out here, and the
cache every rank shares."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="training needs torch (the [export] extra)")

from pcedge.errors import InternalError  # noqa: E402
from pcedge.masks import create_mask_set  # noqa: E402
from pcedge.training import greedy_masks  # noqa: E402
from pcedge.training.greedy_masks import GreedyCache, worst_two_masks  # noqa: E402


class Linear(torch.nn.Module):
    """A real (tiny) classifier whose losses differ for every mask: a seeded linear layer over the pixels."""

    def __init__(self, seed: int, size: int = 12, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = torch.nn.Linear(3 * size * size, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@given(seed=st.integers(0, 10_000), n=st.integers(1, 5), chunk=st.integers(1, 40), per_axis=st.integers(2, 4))
def test_greedy_pairs_are_the_brute_force_worst_views(seed, n, chunk, per_axis, monkeypatch_module):
    """First mask = argmax of the K one-mask losses; second = argmax over j of the loss with masks (first, j), in any chunking."""
    monkeypatch_module.setattr(greedy_masks, "SEARCH_IMAGES", chunk)
    masks = create_mask_set((12, 12), 2, masks_per_axis=per_axis)
    keep = torch.from_numpy(masks.keep_masks().astype(np.float32))
    model, gen = Linear(seed), torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 12, 12, generator=gen), torch.randint(0, 4, (n,), generator=gen)
    pairs = worst_two_masks(model, x, y, keep)
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        for i in range(n):
            first = [float(loss(model(x[i : i + 1] * keep[k]), y[i : i + 1])) for k in range(len(masks))]
            f = int(np.argmax(first))
            second = [float(loss(model(x[i : i + 1] * keep[f] * keep[j]), y[i : i + 1])) for j in range(len(masks))]
            assert int(pairs[i, 0]) == f and first[f] == pytest.approx(max(first), rel=1e-5)
            assert second[int(pairs[i, 1])] == pytest.approx(max(second), rel=1e-5)
    assert model.training  # the search leaves the model as it found it


def test_cache_keeps_searched_pairs_and_refuses_a_lookup_before_the_search():
    cache = GreedyCache(6)
    cache.store(np.array([4, 1, 2]), np.array([[3, 5], [-1, -1], [0, 7]]))  # position 1: not searched by its rank
    assert cache.holds(np.array([4, 1, 2])).tolist() == [True, False, True]
    assert cache.lookup(np.array([2, 4])).tolist() == [[0, 7], [3, 5]]
    with pytest.raises(InternalError, match=r"positions \[1\]"):
        cache.lookup(np.array([4, 1]))
