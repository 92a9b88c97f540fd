"""Double masking follows the paper's reference exactly, and certification is sound (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcedge.defense import (
    Decision,
    DoubleMasking,
    FullTable,
    certification_pairs,
    contradiction_first_order,
    double_masking,
    double_masking_table,
    is_certified,
    majority_label,
    table_from_pairs,
)
from pcedge.errors import ConfigError
from pcedge.masks import MaskSet
from tests.conftest import examples


def reference_double_masking(table: np.ndarray) -> int:
    """A line-by-line port of the reference ``double_masking`` loop, on a precomputed label table.

    ``np.argsort(..., kind="stable")`` makes the reference's tie rule explicit: among equally frequent
    labels the largest id (last in np.unique's sorted order) is the majority.
    """
    pred_one_mask = np.diagonal(table)
    pred, cnt = np.unique(pred_one_mask, return_counts=True)
    if len(pred) == 1:
        return int(pred[0])
    sorted_idx = np.argsort(cnt, kind="stable")
    majority_pred = pred[sorted_idx][-1]
    disagreer_pred = pred[sorted_idx][:-1]
    tmp = np.zeros_like(pred_one_mask, dtype=bool)
    for dis in disagreer_pred:
        tmp = np.logical_or(tmp, pred_one_mask == dis)
    flg = False
    defense_pred = majority_pred
    for i in np.where(tmp)[0]:
        dis = pred_one_mask[i]
        flg = True
        for j in range(len(pred_one_mask)):
            if table[i, j] != dis:
                flg = False
                break
        if flg:
            defense_pred = dis
            break
    return int(defense_pred)


@st.composite
def label_tables(draw, max_k=12, max_label=4):
    k = draw(st.integers(1, max_k))
    values = draw(st.lists(st.integers(0, max_label), min_size=k * (k + 1) // 2, max_size=k * (k + 1) // 2))
    return table_from_pairs(k, np.array(values))


# ------------------------------------------------------------------------------------ examples
def test_agreed():
    d = double_masking_table(np.full((4, 4), 7))
    assert (d.label, d.case, d.disagreers, d.two_mask_passes) == (7, "agreed", (), 0)


def test_majority_tie_goes_to_the_largest_label():
    assert majority_label(np.array([3, 3, 5, 5, 1])) == 5
    assert majority_label(np.array([9, 2, 2, 9])) == 9


def test_disagreer_that_passes_the_second_round():
    table = np.full((4, 4), 1)
    table[2, :] = table[:, 2] = 6  # mask 2 removes the patch: every two-mask image with it says 6
    d = double_masking_table(table)
    assert (d.label, d.case, d.disagreers, d.passing_mask) == (6, "disagreer", (2,), 2)
    assert d.two_mask_passes == 3


def test_disagreer_rejected_gives_majority():
    table = np.full((5, 5), 1)
    table[3, 3] = 8
    d = double_masking_table(table)
    assert (d.label, d.case, d.disagreers) == (1, "majority", (3,))
    assert d.two_mask_passes == 4  # one batch: the K-1 two-mask images of mask 3
    one_by_one = double_masking(np.diagonal(table), lambda i, js: table[i, js], chunk_size=1)
    assert one_by_one.label == 1 and one_by_one.two_mask_passes == 1  # stops at the first contradiction


def test_on_demand_skips_self_reuses_symmetry_and_stops_early():
    table = np.full((6, 6), 0)
    for i in (1, 4):
        table[i, i] = 5
    table[1, 4] = table[4, 1] = 5
    asked: list[tuple[int, int]] = []

    def labels(i, js):
        asked.extend((i, int(j)) for j in js)
        return table[i, js]

    d = double_masking(np.diagonal(table), labels, chunk_size=1)
    assert d.case == "majority" and d.label == 0
    assert all(i != j for i, j in asked)
    keys = [(min(i, j), max(i, j)) for i, j in asked]
    assert len(keys) == len(set(keys)), "a label z_ij = z_ji was computed twice"
    # mask 1: j=0 contradicts at once (1 pass); mask 4: z_40 again needed, z_41 known -> 1 more pass
    assert d.two_mask_passes == 2


def test_budget_stops_the_second_round_and_says_so():
    table = np.full((5, 5), 1)
    table[2, :] = table[:, 2] = 6
    d = double_masking_table(table, budget=2)
    assert d.case == "budget" and d.label == 1 and d.two_mask_passes == 0
    assert double_masking_table(table, budget=4).case == "disagreer"


def test_certification_pairs_and_table():
    pairs = certification_pairs(36)
    assert len(pairs) == 666 and (pairs[:, 0] <= pairs[:, 1]).all()
    assert len({tuple(p) for p in pairs.tolist()}) == 666
    table = table_from_pairs(3, np.array([1, 1, 1, 1, 1, 1]))
    assert table.dtype == np.int16 and is_certified(table, 1) and not is_certified(table, 2)
    table[0, 2] = table[2, 0] = 4
    assert not is_certified(table, 1)


def test_bad_tables_and_callbacks_are_refused():
    with pytest.raises(ConfigError):
        double_masking_table(np.zeros((2, 3)))
    asym = np.zeros((3, 3))
    asym[0, 1] = 1
    with pytest.raises(ConfigError):
        double_masking_table(asym)
    with pytest.raises(ConfigError):
        double_masking([1, 2, 2], lambda i, js: np.array([1]))
    with pytest.raises(ConfigError):
        double_masking([], lambda i, js: js)


# ------------------------------------------------------------------------------------ properties
@settings(max_examples=examples(3000))
@given(label_tables(), st.sampled_from([None, 1, 2, 5]))
def test_matches_reference_and_on_demand_agrees_with_table(table, chunk):
    expected = reference_double_masking(table)
    d_table = double_masking_table(table)
    d_demand = double_masking(np.diagonal(table), lambda i, js: table[i, js], chunk_size=chunk)
    assert d_table.label == expected
    assert d_demand.label == expected and d_demand.case == d_table.case
    k = table.shape[0]
    assert d_demand.two_mask_passes <= len(d_demand.disagreers) * (k - 1)
    assert d_demand.two_mask_passes <= k * (k - 1) // 2  # symmetric labels are never recomputed


@settings(max_examples=examples(2000))
@given(label_tables(max_k=16), st.lists(st.integers(1, 20), min_size=1, max_size=20))
def test_any_chunk_schedule_gives_the_table_decision_and_counts_what_it_asked(table, plan):
    """A schedule (chunk size as a function of the labels still needed) changes the work, never the answer."""
    asked: list[int] = []

    def labels(i, js):
        asked.append(len(js))
        return table[i, js]

    def schedule(remaining):
        return plan[remaining % len(plan)]

    expected = double_masking_table(table)
    d = double_masking(np.diagonal(table), labels, chunk_size=schedule)
    assert (d.label, d.case, d.disagreers, d.passing_mask) == (expected.label, expected.case, expected.disagreers,
                                                               expected.passing_mask)
    assert d.two_mask_passes == sum(asked)
    assert all(n >= 1 for n in asked)


@settings(max_examples=examples(1500))
@given(label_tables(max_k=16), st.randoms(use_true_random=False), st.sampled_from([None, 1, 3]))
def test_any_ask_order_gives_the_table_decision(table, rng, chunk):
    k = table.shape[0]
    distances = np.array([[rng.random() for _ in range(k)] for _ in range(k)])
    shuffled = {i: rng.sample([j for j in range(k) if j != i], k - 1) for i in range(k)}
    expected = double_masking_table(table)
    for order in (contradiction_first_order(distances), lambda i, labels, dis: shuffled[i]):
        d = double_masking(np.diagonal(table), lambda i, js: table[i, js], chunk_size=chunk, order=order)
        assert (d.label, d.case, d.passing_mask) == (expected.label, expected.case, expected.passing_mask)


def test_contradiction_first_order():
    labels = np.array([0, 0, 5, 0, 7, 5])  # majority 0; disagreers 2 (5), 4 (7), 5 (5)
    distances = np.abs(np.subtract.outer(np.arange(6), np.arange(6))).astype(float)
    order = contradiction_first_order(distances)(2, labels, [2, 4, 5])
    assert order == [4, 1, 3, 0, 5]  # the other-label disagreer, majority masks nearest first, same label last


def test_an_order_that_skips_a_mask_is_refused():
    table = np.full((4, 4), 1)
    table[2, 2] = 3
    with pytest.raises(ConfigError, match="every other mask once"):
        double_masking(np.diagonal(table), lambda i, js: table[i, js], order=lambda i, labels, dis: [0, 1])


def test_a_schedule_returning_no_images_is_refused():
    table = np.full((4, 4), 1)
    table[2, 2] = 3
    with pytest.raises(ConfigError, match="chunk size must be >= 1"):
        double_masking(np.diagonal(table), lambda i, js: table[i, js], chunk_size=lambda remaining: 0)


@st.composite
def attacked_tables(draw):
    """A certified clean table, then an adversary who rewrites every entry a covering mask does not fix."""
    n = draw(st.integers(8, 40))
    p = draw(st.integers(1, max(1, n // 3)))
    per_axis = draw(st.integers(1, 5))
    ms = MaskSet.square(n, p, masks_per_axis=per_axis)
    py = draw(st.integers(0, n - p))
    px = draw(st.integers(0, n - p))
    covering = set(ms.covering_masks([[py, px, p, p]]).tolist())
    true_label = draw(st.integers(0, 9))
    k = len(ms)
    table = np.full((k, k), true_label, dtype=np.int64)
    for i in range(k):
        for j in range(i, k):
            if i not in covering and j not in covering:
                table[i, j] = table[j, i] = draw(st.integers(0, 9))
    return table, true_label, covering


@settings(max_examples=examples(2000))
@given(attacked_tables())
def test_soundness_certified_label_survives_any_patch(case):
    table, true_label, covering = case
    assert covering, "the mask set must cover every placement"
    decision = double_masking_table(table)
    assert decision.label == true_label
    assert double_masking(np.diagonal(table), lambda i, js: table[i, js], chunk_size=1).label == true_label


# ------------------------------------------------------------------------------------ the resumable decision
def run_state(state: DoubleMasking, table: np.ndarray, asked: list[int] | None = None) -> Decision:
    """Drive a decision to its end from a full table, recording each request's size."""
    while not state.done:
        pairs = state.pending
        assert len(pairs) >= 1 and pairs.shape[1] == 2
        if asked is not None:
            asked.append(len(pairs))
        state.supply(table[pairs[:, 0], pairs[:, 1]])
    return state.decision


@settings(max_examples=examples(2000))
@given(label_tables(max_k=16), st.lists(st.integers(1, 20), min_size=1, max_size=20), st.randoms(use_true_random=False),
       st.one_of(st.none(), st.integers(0, 60)), st.booleans())
def test_resumable_decision_equals_the_table_decision_for_any_schedule_order_and_budget(table, plan, rng, budget, prefetch):
    """The state form, under any chunk schedule, ask order, budget and the all-at-once prefetch, decides as the
    table does (or says "budget"), and counts exactly the labels it asked for."""
    k = table.shape[0]
    shuffled = {i: rng.sample([j for j in range(k) if j != i], k - 1) for i in range(k)}
    expected = double_masking_table(table)
    asked: list[int] = []
    state = DoubleMasking(np.diagonal(table), chunk_size=lambda remaining: plan[remaining % len(plan)], budget=budget,
                          order=lambda i, labels, dis: shuffled[i], prefetch_all=prefetch)
    d = run_state(state, table, asked)
    assert d.two_mask_passes == sum(asked)
    if budget is not None:
        assert d.two_mask_passes <= budget
    if d.case == "budget":
        assert budget is not None and d.label == expected.majority and expected.case != "agreed"
    else:
        assert (d.label, d.case, d.disagreers, d.passing_mask) == (expected.label, expected.case, expected.disagreers,
                                                                   expected.passing_mask)
    if budget is None or budget >= k * (k - 1) // 2:
        assert d.case != "budget"  # a budget that holds every pair never cuts the round short


@settings(max_examples=examples(500))
@given(st.lists(label_tables(max_k=12), min_size=1, max_size=8), st.sampled_from([None, 1, 3]), st.integers(1, 40))
def test_frames_in_lockstep_with_merged_requests_each_get_their_own_decision(tables, chunk, capacity):
    """N decisions advanced together, each round's requests concatenated into one labelled batch (split into
    calls of ``capacity`` images, as the driver does), give each frame exactly its own decision."""
    states = [DoubleMasking(np.diagonal(t), chunk_size=chunk) for t in tables]
    while not all(s.done for s in states):
        active = [n for n, s in enumerate(states) if not s.done]
        owner = np.concatenate([np.full(len(states[n].pending), n) for n in active])
        pairs = np.concatenate([states[n].pending for n in active])
        labels = np.empty(len(pairs), np.int64)
        for start in range(0, len(pairs), capacity):  # calls of at most `capacity` images, frames mixed in a call
            sl = slice(start, start + capacity)
            labels[sl] = [tables[o][i, j] for o, (i, j) in zip(owner[sl], pairs[sl])]
        for n in active:
            states[n].supply(labels[owner == n])
    for state, table in zip(states, tables):
        alone = double_masking(np.diagonal(table), lambda i, js: table[i, js], chunk_size=chunk)
        assert state.decision == alone


def test_resumable_decision_refuses_misuse():
    table = np.full((4, 4), 1)
    table[2, 2] = 3
    state = DoubleMasking(np.diagonal(table))
    assert not state.done and len(state.pending) == 3
    with pytest.raises(ConfigError, match="still needs 3 masked-image labels"):
        state.decision
    with pytest.raises(ConfigError, match="3 masked-image labels were asked for, 2 supplied"):
        state.supply([1, 1])
    state.supply(table[2, [0, 1, 3]])
    assert state.done and state.decision.case == "majority" and len(state.pending) == 0
    with pytest.raises(ConfigError, match="already made"):
        state.supply([])
    agreed = DoubleMasking([5, 5, 5])
    assert agreed.done and agreed.decision.case == "agreed"


@settings(max_examples=examples(300))
@given(label_tables(max_k=10))
def test_full_table_request_rebuilds_the_table(table):
    k = table.shape[0]
    computation = FullTable(k)
    pairs = computation.pending
    assert len(pairs) == k * (k + 1) // 2
    computation.supply(table[pairs[:, 0], pairs[:, 1]])
    assert computation.done and np.array_equal(computation.table, table) and len(computation.pending) == 0
