"""The vectorised fast paths of tokens.py against plain-Python oracles (block sort, cap rule, jagged views)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from dataset_builder.tokens import (
    ObjectSet, _order_by_energy_desc, cap_objects, flatten_prong_vectors, jagged_flat, merge_in_order,
)


def _oracle_order(energy, starts, counts):
    """Per block: indices sorted by E descending, ties and NaN in file order (NaN last)."""
    out = []
    for start, count in zip(starts.tolist(), counts.tolist()):
        block = list(range(start, start + count))
        finite = [i for i in block if not np.isnan(energy[i])]
        out += sorted(finite, key=lambda i: (-energy[i], i)) + [i for i in block if np.isnan(energy[i])]
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("sizes", [[21, 30, 25, 400, 22, 3000], [5] * 50, [70_000, 1, 2]])
def test_block_sort_matches_oracle_with_ties_and_nan(sizes):
    rng = np.random.default_rng(len(sizes))
    counts = np.array(sizes)
    energy = rng.integers(0, 7, counts.sum()).astype(np.float64)  # many ties
    energy[rng.random(counts.sum()) < 0.05] = np.nan
    starts = np.cumsum(counts) - counts
    pick = np.arange(len(counts)) % 2 == 0  # blocks need not be adjacent
    np.testing.assert_array_equal(_order_by_energy_desc(energy, starts[pick], counts[pick]),
                                  _oracle_order(energy, starts[pick], counts[pick]))


def test_cap_objects_matches_oracle():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 9, 200)
    m = int(counts.sum())
    p4 = rng.normal(size=(m, 4))
    p4[:, 3] = rng.integers(1, 5, m)  # ties in E
    extra, pid = rng.normal(size=(m, 5)), np.arange(m, dtype=np.int32)
    cap = 4
    kept, aggregate, n_merged = cap_objects(ObjectSet(counts, p4, extra, pid), cap, aggregate_pid=7)
    starts = np.cumsum(counts) - counts
    expected_kept, expected_sum, expected_mean = [], [], []
    for start, count in zip(starts.tolist(), counts.tolist()):
        block = list(range(start, start + count))
        if count <= cap:
            expected_kept += block
            continue
        ordered = sorted(block, key=lambda i: (-p4[i, 3], i))
        expected_kept += ordered[:cap - 1]
        merged = ordered[cap - 1:]
        total = np.zeros(4)
        for i in merged:  # sequential sums, in sorted order
            total = total + p4[i]
        expected_sum.append(total)
        expected_mean.append(sum((extra[i] for i in merged), np.zeros(5)) / len(merged))
    assert kept.pid.tolist() == expected_kept
    np.testing.assert_array_equal(kept.p4, p4[expected_kept])
    np.testing.assert_array_equal(aggregate.p4, np.array(expected_sum))
    np.testing.assert_allclose(aggregate.extra, np.array(expected_mean), rtol=1e-12)
    assert aggregate.counts.tolist() == (counts > cap).astype(int).tolist()
    assert n_merged == int(np.clip(counts - (cap - 1), 0, None)[counts > cap].sum())


def test_merge_in_order_interleaves_per_event():
    a = ObjectSet(np.array([2, 0, 1]), np.arange(12.0).reshape(3, 4), np.zeros((3, 5)), np.array([1, 2, 3], np.int32))
    b = ObjectSet(np.array([1, 2, 0]), -np.arange(12.0).reshape(3, 4), np.ones((3, 5)), np.array([4, 5, 6], np.int32))
    merged = merge_in_order([a, b])
    assert merged.pid.tolist() == [1, 2, 4, 5, 6, 3] and merged.counts.tolist() == [3, 2, 1]
    np.testing.assert_array_equal(merged.p4[2], b.p4[0])
    np.testing.assert_array_equal(merged.extra[:, 0], [0, 0, 1, 1, 1, 0])


def test_jagged_views_handle_sliced_arrays():
    values = ak.Array({"x": [[1.0], [2.0, 3.0], [], [4.0, 5.0, 6.0]]})[1:]  # offsets not starting at 0
    flat, counts = jagged_flat(values, "x")
    assert flat.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0] and counts.tolist() == [2, 0, 3]
    nested = ak.Array([[[9.0] * 4], [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]])[1:]
    np.testing.assert_array_equal(flatten_prong_vectors(nested, "prong_part_E", np.array([2])),
                                  np.arange(1.0, 9.0).reshape(2, 4))
