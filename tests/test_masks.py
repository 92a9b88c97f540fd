"""Mask generation matches the reference numbers, and the coverage proof agrees with brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcedge.errors import ConfigError, InsecureMaskSetError
from pcedge.masks import MaskSet, ThreatModel, axis_positions, create_mask_set, parse_patch, patch_size_from_fraction
from tests.conftest import examples


def brute_force_uncovered(mask_set: MaskSet, shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Every placement of one patch checked against every mask with plain loops (independent of verify)."""
    h, w = mask_set.image_size
    ph, pw = shape
    keep = mask_set.keep_masks()
    missing = []
    for y in range(h - ph + 1):
        for x in range(w - pw + 1):
            if not any((~keep[k, y : y + ph, x : x + pw]).all() for k in range(len(mask_set))):
                missing.append((y, x))
    return missing


# ------------------------------------------------------------------------------------ reference numbers
def test_design_table_224_two_percent_six_per_axis():
    ms = MaskSet.square(224, patch_fraction=0.02, masks_per_axis=6)
    assert ms.threat.shapes == ((32, 32),)
    assert ms.stride == (33, 33)
    assert ms.mask_size == (64, 64)
    assert ms.positions() == ([0, 33, 66, 99, 132, 160], [0, 33, 66, 99, 132, 160])
    assert len(ms) == 36
    assert ms.windows.shape == (36, 1, 4)
    assert ms.windows[1].tolist() == [[0, 33, 64, 97]]  # row-major: second mask moves along x
    assert ms.windows[6].tolist() == [[33, 0, 97, 64]]
    assert ms.report.placements_checked == 193 * 193
    assert ms.report.min_masks_covering >= 1


@pytest.mark.parametrize("fraction,side", [(0.01, 23), (0.02, 32), (0.03, 39)])
def test_patch_fraction_sides(fraction, side):
    assert patch_size_from_fraction(224, fraction) == side
    assert parse_patch(f"{fraction * 100:g}%", 224) == (side, side)


def test_patch_fraction_exact_square_does_not_round_up():
    assert patch_size_from_fraction(100, 0.04) == 20  # 0.04 * 10000 = 400 = 20^2 exactly


def test_parse_patch_forms_and_errors():
    assert parse_patch("32", 224) == (32, 32)
    assert parse_patch("32x16", 224) == (32, 16)
    assert parse_patch(7, 224) == (7, 7)
    for bad in ("", "two", "2%%", "-3", "0"):
        with pytest.raises(ConfigError):
            parse_patch(bad, 224)


def test_rectangles_reference_set_has_168_masks():
    shapes = [(5, 224), (12, 83), (23, 38), (39, 20), (84, 12), (224, 5)]
    ms = MaskSet.rectangles(224, shapes, 32)
    assert len(ms) == 168
    assert ms.threat.shapes == tuple(shapes)
    assert len(ms.mask_sizes) == 6
    with pytest.raises(ConfigError):
        _ = ms.mask_size


def test_two_patch_set_is_every_pair_of_base_masks():
    ms = MaskSet.two_patch(64, 8, masks_per_axis=3)
    base = MaskSet.square(64, 8, masks_per_axis=3)
    k = len(base)
    assert len(ms) == k * (k - 1) // 2
    assert ms.windows.shape[1] == 2
    assert ms.threat.count == 2
    firsts = {tuple(w) for w in ms.windows[:, 0].tolist()} | {tuple(w) for w in ms.windows[:, 1].tolist()}
    assert firsts == {tuple(w) for w in base.windows[:, 0].tolist()}


def test_non_square_image():
    ms = MaskSet.square((480, 640), patch_fraction=0.02, masks_per_axis=6)
    side = patch_size_from_fraction((480, 640), 0.02)
    assert ms.threat.shapes == ((side, side),)
    rows, cols = ms.positions()
    assert len(rows) == 6 and len(cols) == 6
    assert rows[-1] + ms.mask_size[0] == 480 and cols[-1] + ms.mask_size[1] == 640
    assert not brute_force_uncovered(MaskSet.square((48, 64), 9, masks_per_axis=4), (9, 9))


def test_patch_as_large_as_the_image_needs_one_mask():
    ms = MaskSet.square(32, 32, masks_per_axis=6)
    assert len(ms) == 1
    assert ms.windows.tolist() == [[[0, 0, 32, 32]]]


def test_one_pixel_patch():
    ms = MaskSet.square(20, 1, masks_per_axis=5)
    assert ms.stride == (4, 4) and ms.mask_size == (4, 4)
    assert not brute_force_uncovered(ms, (1, 1))


def test_patch_larger_than_image_is_refused():
    with pytest.raises(ConfigError, match="does not fit"):
        MaskSet.square(32, 33, masks_per_axis=2)


@pytest.mark.parametrize("kwargs", [{"masks_per_axis": 0}, {"masks_per_axis": -2}, {"stride": 0}])
def test_bad_budget_is_refused(kwargs):
    with pytest.raises(ConfigError):
        MaskSet.square(64, 8, **kwargs)


def test_exactly_one_of_patch_and_budget():
    with pytest.raises(ConfigError):
        MaskSet.square(64, 8, patch_fraction=0.02, masks_per_axis=2)
    with pytest.raises(ConfigError):
        MaskSet.square(64, 8, masks_per_axis=2, stride=4)


def test_insecure_stride_with_fixed_mask_size_names_the_secure_stride():
    with pytest.raises(InsecureMaskSetError, match=r"at most \(29, 29\)"):
        MaskSet.square(224, 32, stride=33, mask_size=60)
    assert MaskSet.square(224, 32, stride=29, mask_size=60).report.min_masks_covering >= 1
    small = MaskSet.square(60, 8, stride=5, mask_size=12)  # the largest secure stride for this mask size
    assert brute_force_uncovered(small, (8, 8)) == []
    with pytest.raises(InsecureMaskSetError):
        MaskSet.square(60, 8, stride=6, mask_size=12)


def test_custom_set_with_a_gap_is_refused_naming_the_placement():
    windows = np.array([[[0, 0, 16, 16]], [[0, 17, 16, 32]]])  # column 16 is never inside a mask with x-room
    with pytest.raises(InsecureMaskSetError, match=r"4x4 patch at \(y=0, x=13\)"):
        MaskSet.from_windows((16, 32), windows, ThreatModel(((4, 4),)))


def test_verify_against_a_larger_threat_fails_honestly():
    ms = MaskSet.square(224, patch_fraction=0.02, masks_per_axis=6)
    with pytest.raises(InsecureMaskSetError):
        ms.verify(ThreatModel(((45, 45),)))


def test_two_patch_verify_detects_a_missing_pair():
    good = MaskSet.two_patch(32, 8, masks_per_axis=2)
    windows = good.windows[1:]  # drop the pair that alone holds two patches in opposite corners
    with pytest.raises(InsecureMaskSetError):
        MaskSet.from_windows(32, windows, good.threat)


def test_keep_masks_and_round_trip():
    ms = MaskSet.square(40, 6, masks_per_axis=3)
    keep = ms.keep_masks()
    assert keep.shape == (len(ms), 40, 40) and keep.dtype == bool
    for k, ((y0, x0, y1, x1),) in enumerate(ms.windows):
        assert not keep[k, y0:y1, x0:x1].any()
        assert keep[k].sum() == 40 * 40 - (y1 - y0) * (x1 - x0)
    again = MaskSet.from_dict(ms.to_dict())
    assert np.array_equal(again.windows, ms.windows) and again.threat == ms.threat


def test_tampered_saved_set_is_refused():
    data = MaskSet.square(40, 6, masks_per_axis=3).to_dict()
    data["windows"] = data["windows"][:-1]
    with pytest.raises(InsecureMaskSetError):
        MaskSet.from_dict(data)


def test_windows_outside_the_image_are_refused():
    with pytest.raises(ConfigError):
        MaskSet.from_windows(16, np.array([[[0, 0, 17, 16]]]), ThreatModel(((2, 2),)))


def test_create_mask_set_cli_helper():
    assert len(create_mask_set(224, "2%", masks_per_axis=6)) == 36
    assert create_mask_set(224, "32", stride=33).stride == (33, 33)
    assert create_mask_set(64, "8", masks_per_axis=2, two_patches=True).threat.count == 2


# ------------------------------------------------------------------------------------ properties
@st.composite
def square_sets(draw):
    h = draw(st.integers(1, 40))
    w = draw(st.integers(1, 40))
    ph = draw(st.integers(1, h))
    pw = draw(st.integers(1, w))
    if draw(st.booleans()):
        return MaskSet.square((h, w), (ph, pw), masks_per_axis=(draw(st.integers(1, 8)), draw(st.integers(1, 8)))), (ph, pw)
    return MaskSet.square((h, w), (ph, pw), stride=(draw(st.integers(1, 12)), draw(st.integers(1, 12)))), (ph, pw)


@given(square_sets())
def test_generated_sets_are_covering_by_brute_force(case):
    ms, shape = case
    assert brute_force_uncovered(ms, shape) == []
    rows, cols = ms.positions()
    assert rows[0] == 0 and rows[-1] + ms.mask_size[0] == ms.image_size[0]
    assert cols[0] == 0 and cols[-1] + ms.mask_size[1] == ms.image_size[1]


@settings(max_examples=examples(400))
@given(
    h=st.integers(4, 30),
    w=st.integers(4, 30),
    data=st.data(),
)
def test_verify_agrees_with_brute_force_on_random_window_sets(h, w, data):
    """Fuzz: arbitrary (often insecure) window sets; verify() must accept exactly the covering ones."""
    ph = data.draw(st.integers(1, h))
    pw = data.draw(st.integers(1, w))
    k = data.draw(st.integers(1, 6))
    windows = []
    for _ in range(k):
        y0 = data.draw(st.integers(0, h - 1))
        x0 = data.draw(st.integers(0, w - 1))
        windows.append([[y0, x0, data.draw(st.integers(y0 + 1, h)), data.draw(st.integers(x0 + 1, w))]])
    ms = MaskSet((h, w), np.array(windows), ThreatModel(((ph, pw),)), kind="custom", verify=False)
    missing = brute_force_uncovered(ms, (ph, pw))
    if missing:
        with pytest.raises(InsecureMaskSetError):
            ms.verify()
    else:
        report = ms.verify()
        assert report.placements_checked == (h - ph + 1) * (w - pw + 1)
        assert report.min_masks_covering >= 1 and report.worst_margin >= 0


@settings(max_examples=examples(60))
@given(n=st.integers(6, 24), p=st.integers(1, 8), k=st.integers(1, 4), drop=st.integers(0, 100))
def test_two_patch_verify_agrees_with_brute_force(n, p, k, drop):
    p = min(p, n)
    good = MaskSet.two_patch(n, p, masks_per_axis=k)
    windows = good.windows
    if len(windows) > 1:
        windows = np.delete(windows, drop % len(windows), axis=0)
    ms = MaskSet(good.image_size, windows, good.threat, kind="custom", verify=False)
    keep = ms.keep_masks()
    removed = ~keep
    placements = [(y, x) for y in range(n - p + 1) for x in range(n - p + 1)]
    inside = np.array([[removed[m, y : y + p, x : x + p].all() for m in range(len(ms))] for y, x in placements])
    covered = bool(((inside.astype(int) @ inside.T.astype(int)) > 0).all())
    if covered:
        assert ms.verify().min_masks_covering >= 1
    else:
        with pytest.raises(InsecureMaskSetError):
            ms.verify()


def test_axis_positions_append_flush_border():
    assert axis_positions(224, 64, 33) == [0, 33, 66, 99, 132, 160]
    assert axis_positions(10, 10, 3) == [0]
    assert axis_positions(10, 4, 3) == [0, 3, 6]


def brute_force_one_patch_touches(ms: MaskSet, indices) -> bool:
    h, w = ms.image_size
    for ph, pw in ms.threat.shapes:
        for py in range(h - ph + 1):
            for px in range(w - pw + 1):
                if all(any(y0 < py + ph and py < y1 and x0 < px + pw and px < x1 for y0, x0, y1, x1 in ms.windows[k]) for k in indices):
                    return True
    return False


@settings(max_examples=examples(300))
@given(st.integers(8, 30), st.integers(1, 6), st.integers(1, 4), st.data())
def test_one_patch_touches_equals_brute_force(n, p, per_axis, data):
    p = min(p, n)
    ms = MaskSet.square(n, p, masks_per_axis=per_axis)
    indices = data.draw(st.lists(st.integers(0, len(ms) - 1), max_size=6, unique=True))
    assert ms.one_patch_touches(indices) == brute_force_one_patch_touches(ms, indices)


@settings(max_examples=examples(100))
@given(st.integers(1, 3), st.data())
def test_one_patch_touches_with_several_shapes_equals_brute_force(stride, data):
    ms = MaskSet.rectangles(16, [(2, 8), (4, 4), (8, 2)], stride=stride)
    indices = data.draw(st.lists(st.integers(0, len(ms) - 1), max_size=5, unique=True))
    assert ms.one_patch_touches(indices) == brute_force_one_patch_touches(ms, indices)


def test_one_patch_touches_on_the_demo_geometry():
    ms = MaskSet.square(224, 32, masks_per_axis=6)
    assert ms.one_patch_touches([8, 9, 14, 15, 20, 21])  # a 3x2 block around a patch (the demo's patched frames)
    assert not ms.one_patch_touches([0, 35])  # opposite corners: no 32 px patch touches both
    assert ms.one_patch_touches([])
    with pytest.raises(ConfigError):
        MaskSet.two_patch(32, 4, masks_per_axis=3).one_patch_touches([0])


@pytest.mark.parametrize("text,words", [("200%", "not a share of the image"), ("0%", "not a share of the image"),
                                        ("banana", "is not a patch size"), ("0x4", "at least 1 pixel")])
def test_patch_specs_that_cannot_be_are_refused_in_the_users_terms(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_patch(text, 224)
