"""Alarm levels follow the paper's cases; the stream alarm is exactly k of the last n frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcedge.alarm import LEVELS, StreamAlarm, level_of_case, parse_window
from pcedge.defense import CASES
from pcedge.errors import ConfigError


def test_every_case_has_a_level():
    assert {level_of_case(c) for c in CASES} == set(LEVELS)
    assert level_of_case("agreed") == "clear"
    assert level_of_case("disagreer") == "patch"
    assert level_of_case("majority") == level_of_case("budget") == "uncertain"
    with pytest.raises(ConfigError, match="unknown double-masking case"):
        level_of_case("maybe")


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
