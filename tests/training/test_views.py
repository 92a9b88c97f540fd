"""What each training image is shown (pcedge.training.views): draws that belong to the image, not to the process or
batch that meets it; the mix's fractions; random windows against a brute-force drawing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="training needs torch (the [export] extra)")

from pcedge.errors import ConfigError  # noqa: E402
from pcedge.training.views import GREEDY, RANDOM, UNMASKED, ViewMix, apply_windows, plan_views  # noqa: E402

MIX = ViewMix(0.25, 0.25, 0.5)


@given(positions=st.lists(st.integers(0, 10**6), min_size=1, max_size=40), cut=st.integers(1, 40), world=st.integers(1, 4),
       epoch=st.integers(0, 9), seed=st.integers(0, 99))
def test_an_image_is_shown_the_same_view_whoever_meets_it(positions, cut, world, epoch, seed):
    """Any split into batches or ranks (round-robin, as the sampler deals) gives each position the same draws."""
    positions = np.array(positions)
    whole = plan_views(positions, epoch=epoch, seed=seed, mix=MIX, windows=2, image_size=(28, 28))
    for rank in range(world):
        mine = np.arange(rank, len(positions), world)
        for start in range(0, len(mine), cut):
            part = mine[start : start + cut]
            kinds, centres = plan_views(positions[part], epoch=epoch, seed=seed, mix=MIX, windows=2, image_size=(28, 28))
            assert np.array_equal(kinds, whole[0][part]) and np.array_equal(centres, whole[1][part])
    assert ((whole[1] >= 0) & (whole[1] < 28)).all()


def test_views_follow_the_mix_and_change_between_epochs():
    positions = np.arange(20_000)
    kinds, _ = plan_views(positions, epoch=0, seed=3, mix=MIX, windows=0, image_size=(28, 28))
    shares = [float((kinds == kind).mean()) for kind in (UNMASKED, RANDOM, GREEDY)]
    assert shares == pytest.approx([0.25, 0.25, 0.5], abs=0.015)
    later, _ = plan_views(positions, epoch=1, seed=3, mix=MIX, windows=0, image_size=(28, 28))
    assert 0.4 < float((later != kinds).mean()) < 0.8  # redrawn each epoch (independent draws differ 62.5% of the time)
    only = plan_views(positions[:100], epoch=0, seed=3, mix=ViewMix(0, 1, 0), windows=0, image_size=(28, 28))[0]
    assert set(only.tolist()) == {RANDOM}


@given(n=st.integers(1, 4), windows=st.integers(0, 3), mh=st.integers(1, 12), mw=st.integers(1, 12), seed=st.integers(0, 999))
def test_windows_are_zeroed_where_brute_force_draws_them(n, windows, mh, mw, seed):
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 16, (n, windows, 2))
    batch = torch.ones(n, 3, 16, 20)
    apply_windows(batch, (mh, mw), torch.from_numpy(centres))
    expected = np.ones((n, 16, 20))
    for i in range(n):
        for cy, cx in centres[i]:
            y0, x0 = cy - mh // 2, cx - mw // 2
            expected[i, max(y0, 0) : max(y0 + mh, 0), max(x0, 0) : max(x0 + mw, 0)] = 0
    assert np.array_equal(batch.numpy(), np.repeat(expected[:, None], 3, axis=1))


def test_a_mix_must_be_three_fractions_summing_to_one():
    assert ViewMix.parse("0.2,0,0.8") == ViewMix(0.2, 0.0, 0.8)
    for bad, words in (("0.5,0.5", "three fractions"), ("a,b,c", "three fractions"), ("0.5,0.5,0.5", "sum to 1"),
                       ("-0.5,0.5,1", ">= 0")):
        with pytest.raises(ConfigError, match=words):
            ViewMix.parse(bad)
