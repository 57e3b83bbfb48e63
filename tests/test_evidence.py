"""The evidence diagnosis: which rows of a large bank it keeps, and that its table tells a
token's scale (seen by the Euclidean distance) from its direction (all a cosine sees)."""

import numpy as np
import pandas as pd

from asdlib import evidence


def test_bank_rows_keep_every_target_clip_and_spread_the_source_clips():
    domain = np.array(["source"] * 990 + ["target"] * 10, dtype=object)
    rows = evidence.bank_rows(domain, 200)
    assert len(rows) == 200 and len(set(rows)) == 200
    assert set(np.flatnonzero(domain == "target")) <= set(rows)
    source = rows[domain[rows] == "source"]
    assert source[0] == 0 and source[-1] == 989  # spread over the whole source order
    assert np.ptp(np.diff(source)) <= 1  # evenly
    small = np.array(["source"] * 100 + ["target"] * 10, dtype=object)
    assert np.array_equal(evidence.bank_rows(small, 200), np.arange(110))  # the demo: all
    assert np.array_equal(evidence.bank_rows(domain, None), np.arange(1000))


def _view(seed: int):
    """A machine whose anomalies scale one token by 2 (a click: same direction, more energy)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=16)

    def grid():
        return (base + 0.3 * rng.normal(size=(12, 8, 16))).astype(np.float32)

    bank = [grid() for _ in range(40)]
    test, kinds = [], []
    for i in range(24):
        g = grid()
        if i >= 12:
            g[rng.integers(12), rng.integers(8)] *= 2.0
        test.append(g)
        kinds.append("transient" if i >= 12 else None)
    names = [f"clip_{i:02d}.wav" for i in range(24)]
    domains = ["source"] * 12 + ["source"] * 12
    meta = pd.DataFrame({"machine": "m", "name": names, "domain": ["source", "target"] * 12,
                         "label": ["normal"] * 12 + ["anomaly"] * 12, "kind": kinds})
    bank_f = evidence.clip_features(bank, ["source"] * 36 + ["target"] * 4,
                                    [f"train_{i:02d}.wav" for i in range(40)])
    return {"toy": {"m": (bank_f, evidence.clip_features(test, domains, names))}}, meta


def test_evidence_table_sees_a_scaled_token_with_euclidean_band_max_only():
    views, meta = _view(0)
    table = evidence.evidence_table(views, meta, ldn=(False,))
    assert len(table) == 2 * len(evidence.AGGREGATIONS)
    pick = table.set_index(["metric", "aggregation"])["transient"]
    assert pick[("euclidean", "band max")] > 95
    assert pick[("cosine", "band max")] < 75
    assert pick[("euclidean", "band max")] > pick[("euclidean", "mean")]


def test_bank_and_test_split_a_machines_grids_by_split():
    rows = pd.DataFrame({"split": ["train", "test", "train", "test"],
                         "domain": ["source", "source", "target", "target"],
                         "name": ["a.wav", "b.wav", "c.wav", "d.wav"]})
    grids = [np.full((t, 8, 3), i, np.float32) for i, t in enumerate((2, 3, 4, 1))]
    bank, test = evidence.bank_and_test(grids, rows)
    assert list(bank.names) == ["a.wav", "c.wav"] and list(test.names) == ["b.wav", "d.wav"]
    assert list(bank.domain) == ["source", "target"] and bank.n_time.tolist() == [2, 4]
    assert test.tokens.shape == (2, 3, 8, 3) and test.tokens[1, 0, 0, 0] == 3
    assert not test.tokens[1, 1:].any()
