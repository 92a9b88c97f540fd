"""Double masking and certification on label tables: pure numpy, no engine in sight.

Semantics follow the PatchCleanser reference implementation exactly (DESIGN.md section 3):

1. all one-mask labels agree -> that label ("agreed");
2. majority = most frequent one-mask label, ties to the largest label id;
3. for each disagreeing mask i (label != majority) in ascending index order, if every two-mask label
   z_ij (j != i) equals y_i, return y_i ("disagreer");
4. otherwise the majority ("majority").

The on-demand version asks an engine only for labels it does not know yet, may batch them, stops a mask
at its first contradicting label, and can be bounded by a pass budget; when the budget stops the second
round the decision says so (case "budget") instead of returning a weaker answer silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Sequence, Union

import numpy as np

from .errors import ConfigError

CASES = ("agreed", "disagreer", "majority", "budget")

TwoMaskLabels = Callable[[int, np.ndarray], np.ndarray]
"""``two_mask_labels(i, js)`` returns the labels of the two-mask images (i, j) for each j in ``js``."""

ChunkSize = Union[int, Callable[[int], int], None]
"""How many two-mask labels to ask for at once: a constant, or a function of how many are still needed."""

AskOrder = Callable[[int, np.ndarray, Sequence[int]], Sequence[int]]
"""``order(i, one_mask_labels, disagreers)``: every j != i once, in the order disagreer i's labels are asked for."""


def index_order(i: int, labels: np.ndarray, disagreers: Sequence[int]) -> list[int]:
    """The reference's order: j = 0, 1, ..., K-1 without i."""
    return [j for j in range(len(labels)) if j != i]


def contradiction_first_order(distances: np.ndarray) -> AskOrder:
    """An order that asks first for the two-mask labels most likely to reject disagreer i.

    1. other disagreers whose label differs from i's: z_ij cannot equal both labels, so one pass
       rejects i or j (and the label is reused for the other, since z_ij = z_ji);
    2. masks with the majority label, nearest to mask i first (two adjacent masks remove one large
       region, which changes a label more often than two distant ones);
    3. masks that share i's label last (they agree with i's reading of the image).
    On EfficientNet-Lite0's label tables of 70 camera-like frames, with one label per call, this asks
    for 0.57x the labels of the index order (benchmarks/RESULTS.md, "Second round"); the decision is
    the same for every order.
    """
    distances = np.asarray(distances, dtype=np.float64)

    def order(i: int, labels: np.ndarray, disagreers: Sequence[int]) -> list[int]:
        others = set(disagreers)
        return sorted((j for j in range(len(labels)) if j != i),
                      key=lambda j: (labels[j] == labels[i], j not in others, distances[i, j], j))

    return order


@dataclass(frozen=True)
class Decision:
    """The defended label and how it was reached.

    ``disagreers`` are the one-mask indices whose label differs from the majority; ``two_mask_passes``
    counts the two-mask images that had to be classified (the second round's cost).
    """

    label: int
    case: str
    disagreers: tuple[int, ...] = ()
    two_mask_passes: int = 0
    majority: int = -1
    passing_mask: int | None = None
    one_mask_labels: tuple[int, ...] = field(default=(), repr=False)


def majority_label(labels: np.ndarray) -> int:
    """Most frequent label; ties go to the largest label id (the reference's np.unique + argsort)."""
    values, counts = np.unique(labels, return_counts=True)
    top = counts.max()
    return int(values[counts == top].max())


class LabelRequests:
    """A computation over masked-image labels, resumable: it asks, the caller answers when it can.

    A caller reads :attr:`pending` (an (n, 2) array of mask pairs (i, j) whose labels are needed next;
    (i, i) is the one-mask image i), computes them whenever and however it likes (merged with other
    frames' requests into one engine call, sent to a server), hands them back with :meth:`supply`, and
    repeats until :attr:`done`; then :attr:`answer` holds the result. Nothing is asked for twice: the
    pending request stays the same until it is supplied. ``steps`` is a generator that yields each
    request, receives its labels and returns the answer.
    """

    def __init__(self, steps: Generator[np.ndarray, np.ndarray, Any]) -> None:
        self._steps = steps
        self._finished = False
        self._answer: Any = None
        self._pending = _NO_PAIRS
        self._advance(None)

    @property
    def done(self) -> bool:
        return self._finished

    @property
    def pending(self) -> np.ndarray:
        """The (n, 2) mask pairs whose labels are needed next; empty once the answer is known."""
        return self._pending

    @property
    def answer(self) -> Any:
        if not self._finished:
            raise ConfigError(f"the computation still needs {len(self._pending)} masked-image labels (see .pending)")
        return self._answer

    def supply(self, labels: Sequence[int] | np.ndarray) -> None:
        """The labels of :attr:`pending`, in its order."""
        if self._finished:
            raise ConfigError("the answer is already made; it needs no more labels")
        z = np.asarray(labels).astype(np.int64).ravel()
        if z.size != len(self._pending):
            raise ConfigError(f"{len(self._pending)} masked-image labels were asked for, {z.size} supplied")
        self._advance(z)

    def _advance(self, labels: np.ndarray | None) -> None:
        try:
            self._pending = self._steps.send(labels)
        except StopIteration as stop:
            self._finished, self._answer, self._pending = True, stop.value, _NO_PAIRS


_NO_PAIRS = np.empty((0, 2), np.int32)


class DoubleMasking(LabelRequests):
    """One frame's double-masking decision as a resumable computation (:class:`LabelRequests`): its
    :attr:`decision` is exactly what :func:`double_masking` returns.

    ``prefetch_all`` asks first for every disagreer's two-mask labels in one request (the "all"
    schedule, capped by ``budget``); the other arguments are :func:`double_masking`'s.
    """

    def __init__(self, one_mask_labels: Sequence[int] | np.ndarray, *, chunk_size: ChunkSize = None,
                 budget: int | None = None, known: dict[tuple[int, int], int] | None = None,
                 order: AskOrder = index_order, prefetch_all: bool = False) -> None:
        y = np.asarray(one_mask_labels).astype(np.int64).ravel()
        if y.size == 0:
            raise ConfigError("double masking needs at least one one-mask label")
        if isinstance(chunk_size, int) and chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
        if budget is not None and budget < 0:
            raise ConfigError(f"budget must be >= 0, got {budget}")
        super().__init__(_decide(y, chunk_size, budget, known if known is not None else {}, order, prefetch_all))

    @property
    def decision(self) -> Decision:
        return self.answer


def _decide(y: np.ndarray, chunk_size: ChunkSize, budget: int | None, cache: dict[tuple[int, int], int],
            order: AskOrder, prefetch_all: bool) -> Generator[np.ndarray, np.ndarray, Decision]:
    """DESIGN.md's steps 1-4 as a generator: yields the pairs it needs, receives their labels, returns the decision."""
    k = y.size
    labels = tuple(int(v) for v in y)
    if (y == y[0]).all():
        return Decision(int(y[0]), "agreed", (), 0, int(y[0]), None, labels)
    majority = majority_label(y)
    disagreers = tuple(int(i) for i in np.flatnonzero(y != majority))
    passes = 0
    if prefetch_all:
        wanted = sorted({(min(i, j), max(i, j)) for i in disagreers for j in range(k) if j != i} - cache.keys())
        wanted = wanted[:budget] if budget is not None else wanted
        if wanted:
            pairs = np.array(wanted, dtype=np.int32)
            z = yield pairs
            cache.update(((int(i), int(j)), int(v)) for (i, j), v in zip(pairs.tolist(), z.tolist()))
            passes += len(pairs)
    for i in disagreers:
        target = y[i]
        others = [int(j) for j in order(i, y, disagreers)]
        if sorted(others) != [j for j in range(k) if j != i]:
            raise ConfigError(f"the ask order for mask {i} must list every other mask once, got {others}")
        if any(cache.get((min(i, j), max(i, j)), target) != target for j in others):
            continue  # a label we already have contradicts mask i: no pass needed
        todo = np.array([j for j in others if (min(i, j), max(i, j)) not in cache], dtype=np.int32)
        rejected = False
        start = 0
        while start < todo.size:
            js = todo[start : start + _next_chunk(chunk_size, todo.size - start)]
            start += js.size
            if budget is not None and passes + js.size > budget:
                return Decision(majority, "budget", disagreers, passes, majority, None, labels)
            z = yield np.stack([np.full(js.size, i, np.int32), js], axis=1)
            passes += js.size
            for j, label in zip(js.tolist(), z.tolist()):
                cache[(min(i, j), max(i, j))] = int(label)
            if (z != target).any():
                rejected = True
                break
        if not rejected:
            return Decision(int(target), "disagreer", disagreers, passes, majority, i, labels)
    return Decision(majority, "majority", disagreers, passes, majority, None, labels)


def double_masking(
    one_mask_labels: Sequence[int] | np.ndarray,
    two_mask_labels: TwoMaskLabels,
    *,
    chunk_size: ChunkSize = None,
    budget: int | None = None,
    known: dict[tuple[int, int], int] | None = None,
    order: AskOrder = index_order,
) -> Decision:
    """Double masking with second-round labels computed on demand (:class:`DoubleMasking` driven by a callback).

    ``chunk_size`` bounds how many two-mask labels are asked for at once (None: all that a disagreer
    still needs, in one call; 1: one at a time, the reference's order; a function: called with the
    number of labels the disagreer still needs, it returns the next chunk's size, which is how the
    driver follows the engine's latency curve). A mask is rejected as soon as a label contradicts it,
    so later chunks of that mask are never asked for; ``order`` says which labels to ask for first (it
    changes the work, never the decision). ``budget`` caps the total number of two-mask passes; ``known``
    is a cache of z_ij labels keyed by (min(i, j), max(i, j)) that is read and filled, so z_ij = z_ji
    is never computed twice.
    """
    state = DoubleMasking(one_mask_labels, chunk_size=chunk_size, budget=budget, known=known, order=order)
    while not state.done:
        pairs = state.pending
        z = np.asarray(two_mask_labels(int(pairs[0, 0]), pairs[:, 1].astype(np.int64))).ravel()
        if z.size != len(pairs):
            raise ConfigError(f"two_mask_labels({int(pairs[0, 0])}, {len(pairs)} masks) returned {z.size} labels")
        state.supply(z)
    return state.decision


def _next_chunk(chunk_size: ChunkSize, remaining: int) -> int:
    if chunk_size is None:
        return remaining
    step = chunk_size(remaining) if callable(chunk_size) else chunk_size
    if not 1 <= step:
        raise ConfigError(f"a chunk size must be >= 1, got {step} for {remaining} remaining labels")
    return min(int(step), remaining)


def double_masking_table(table: np.ndarray, **kwargs) -> Decision:
    """Double masking from a full symmetric K x K two-mask label table (diagonal = one-mask labels)."""
    table = _check_table(table)
    return double_masking(np.diagonal(table), lambda i, js: table[i, js], **kwargs)


def certification_pairs(num_masks: int) -> np.ndarray:
    """The K(K+1)/2 unordered pairs (i, j), i <= j, row-major; (i, i) is the one-mask image i."""
    if num_masks < 1:
        raise ConfigError(f"num_masks must be >= 1, got {num_masks}")
    i, j = np.triu_indices(num_masks)
    return np.stack([i, j], axis=1).astype(np.int32)


def table_from_pairs(num_masks: int, labels: np.ndarray, dtype=np.int16) -> np.ndarray:
    """Symmetric K x K table from labels listed in :func:`certification_pairs` order."""
    pairs = certification_pairs(num_masks)
    labels = np.asarray(labels).ravel()
    if labels.size != len(pairs):
        raise ConfigError(f"expected {len(pairs)} labels for K={num_masks}, got {labels.size}")
    table = np.empty((num_masks, num_masks), dtype=dtype)
    table[pairs[:, 0], pairs[:, 1]] = labels
    table[pairs[:, 1], pairs[:, 0]] = labels
    return table


class FullTable(LabelRequests):
    """Certification's computation in the same request protocol: one request for all K(K+1)/2 labels
    (:func:`certification_pairs`), whose answer is the symmetric :attr:`table`."""

    def __init__(self, num_masks: int) -> None:
        super().__init__(_full_table(num_masks))

    @property
    def table(self) -> np.ndarray:
        return self.answer


def _full_table(num_masks: int) -> Generator[np.ndarray, np.ndarray, np.ndarray]:
    labels = yield certification_pairs(num_masks)
    return table_from_pairs(num_masks, labels)


def is_certified(table: np.ndarray, label: int) -> bool:
    """Certified iff every two-mask label (diagonal included) equals ``label``."""
    table = _check_table(table)
    return bool((table == label).all())


def _check_table(table: np.ndarray) -> np.ndarray:
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[0] != table.shape[1] or table.shape[0] < 1:
        raise ConfigError(f"a label table must be K x K, got shape {table.shape}")
    if not np.array_equal(table, table.T):
        raise ConfigError("a label table must be symmetric (z_ij = z_ji)")
    return table
