"""Alarm levels follow the paper's cases; the stream alarm is exactly k of the last n frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcedge.alarm import LEVELS, StreamAlarm, frame_level, parse_window
from pcedge.errors import ConfigError
from pcedge.masks import MaskSet

DEMO_MASKS = MaskSet.square(224, 32, masks_per_axis=6)


def test_levels_follow_the_cases_and_the_locality_of_the_disagreement():
    assert frame_level("agreed", [], DEMO_MASKS) == "clear"
    assert frame_level("majority", [3, 4], DEMO_MASKS) == frame_level("budget", [3], DEMO_MASKS) == "uncertain"
    assert frame_level("disagreer", [8, 9, 14, 15, 20, 21], DEMO_MASKS) == "patch"  # around one patch
    assert frame_level("disagreer", [0, 14, 35], DEMO_MASKS) == "uncertain"  # spread over the image: no patch does that
    assert frame_level("disagreer", [0, 35], MaskSet.two_patch(32, 4, masks_per_axis=3)) == "patch"
    with pytest.raises(ConfigError, match="unknown double-masking case"):
        frame_level("maybe", [], DEMO_MASKS)


@pytest.mark.parametrize("text,expected", [("3/5", (3, 5)), ("1/1", (1, 1)), (" 4/8 ", (4, 8))])
def test_window_parsing(text, expected):
    assert parse_window(text) == expected


@pytest.mark.parametrize("text", ["5/3", "0/5", "3", "a/b", "3/5/7", "-1/4", ""])
def test_bad_windows_are_refused_with_the_valid_form(text):
    with pytest.raises(ConfigError, match=r"--alarm .*K/N.*e\.g\. 3/5"):
        parse_window(text)


def test_alarm_raises_and_clears_once():
    alarm = StreamAlarm(2, 3)
    states = [alarm.update(level) for level in ["patch", "clear", "patch", "patch", "clear", "clear", "clear"]]
    assert [s.active for s in states] == [False, False, True, True, True, False, False]
    assert [s.raised for s in states].count(True) == 1 and states[2].raised
    assert [s.cleared for s in states].count(True) == 1 and states[5].cleared
    assert alarm.raised_count == 1 and alarm.active_frames == 3
    with pytest.raises(ConfigError):
        alarm.update("alert")
    with pytest.raises(ConfigError):
        StreamAlarm(4, 3)


@given(st.integers(1, 6), st.integers(0, 6), st.lists(st.sampled_from(LEVELS), max_size=60))
def test_alarm_is_k_of_the_last_n(k, extra, levels):
    n = k + extra
    alarm = StreamAlarm(k, n)
    for t, level in enumerate(levels):
        state = alarm.update(level)
        recent = levels[max(0, t - n + 1) : t + 1]
        assert state.hits == recent.count("patch")
        assert state.active == (recent.count("patch") >= k)
        assert state.window == len(recent)
