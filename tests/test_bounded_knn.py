"""The PCA-bounded Euclidean search (asdlib.bounded_knn) against the flat exact search."""

import numpy as np
import pytest

from asdlib.bounded_knn import BoundProjection, SearchStats, bounded_knn_search, bounded_knn_self
from asdlib.branches import FineParams, FinePatchScorer
from asdlib.features import ClipFeatures
from asdlib.knn import knn_search, knn_self


def _low_rank(n, d=48, rank=6, noise=0.05, seed=0):
    """(n, d) float32 points near a rank-``rank`` subspace, like patch-embedding tokens."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, d))
    return (rng.normal(size=(n, rank)) @ basis * 3.0 + rng.normal(size=(n, d)) * noise
            ).astype(np.float32)


def _same_neighbours(d0, i0, d1, i1):
    """Equal up to float rounding: distances close, and the neighbour sets equal except
    where a distance tie makes the order arbitrary."""
    np.testing.assert_allclose(d1, d0, rtol=1e-4, atol=1e-5)
    agree = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(i0, i1)])
    assert agree > 0.999


def test_lift_gives_a_lower_bound_and_is_exact_with_every_direction():
    x = _low_rank(300, seed=1)
    q = _low_rank(50, seed=2)
    true = np.sqrt(((q[:, None] - x[None]) ** 2).sum(-1))
    for dim, exact in ((3, False), (48, True)):
        proj = BoundProjection(x, dim)
        lq, lx = proj.lift(q), proj.lift(x)
        bound = np.sqrt(((lq[:, None] - lx[None]) ** 2).sum(-1))
        assert np.all(bound <= true * (1 + 1e-5) + 1e-4)
        if exact:
            np.testing.assert_allclose(bound, true, rtol=1e-4, atol=1e-3)
        else:
            assert np.median(bound / np.maximum(true, 1e-6)) < 0.999


@pytest.mark.parametrize("dim", [2, 8, 48])
def test_search_with_fallback_equals_the_flat_search(dim):
    x, q = _low_rank(600, seed=3), _low_rank(80, seed=4)
    groups, qgroups = np.arange(600) // 20, np.arange(80) % 30
    d0, i0 = knn_search(q, x, 10, groups, qgroups, normalize=False, metric="euclidean")
    stats = SearchStats()
    d1, i1 = bounded_knn_search(q, x, 10, groups, qgroups, dim=dim, candidates=20, stats=stats)
    _same_neighbours(d0, i0, d1, i1)
    assert stats.queries == 80 and 0 <= stats.certified <= 80
    assert not np.any(np.isin(i1, np.flatnonzero(groups == qgroups[0]))[0])
    if dim == 48:  # every direction kept: the bound is the distance, all certified
        assert stats.certified == 80
    if dim == 2:   # a weak bound: some queries needed the flat search
        assert stats.uncertified > 0


@pytest.mark.parametrize("dim", [4, 48])
def test_self_search_with_fallback_equals_knn_self(dim):
    x = _low_rank(5000, seed=5)          # above knn_self's block: the symmetric path
    groups = np.arange(5000) // 50
    d0, i0 = knn_self(x, 16, groups, normalize=False, metric="euclidean")
    d1, i1 = bounded_knn_self(x, 16, groups, dim=dim, candidates=32)
    _same_neighbours(d0, i0, d1, i1)
    assert np.all(groups[np.maximum(i1, 0)] != groups[:, None])


def test_without_fallback_candidates_recover_the_neighbours_of_low_rank_data():
    x = _low_rank(3000, rank=6, seed=6)
    d0, i0 = knn_self(x, 16, normalize=False, metric="euclidean")
    d1, i1 = bounded_knn_self(x, 16, dim=6, candidates=64, fallback=False)
    _same_neighbours(d0, i0, d1, i1)
    # a too-small projection without fallback is approximate: it misses neighbours
    d2, i2 = bounded_knn_self(x, 16, dim=1, candidates=16, fallback=False)
    assert np.mean([len(set(a) & set(b)) / 16 for a, b in zip(i0, i2)]) < 0.99
    assert np.all(d2 >= d0 - 1e-4)      # never closer than the true neighbours


def test_missing_neighbours_come_back_like_the_flat_search():
    x, q = _low_rank(5, seed=7), _low_rank(3, seed=8)
    d0, i0 = knn_search(q, x, 8, normalize=False, metric="euclidean")
    d1, i1 = bounded_knn_search(q, x, 8, dim=2)
    assert np.array_equal(i1 < 0, i0 < 0) and np.all(np.isinf(d1[i1 < 0]))
    _same_neighbours(d0[:, :5], i0[:, :5], d1[:, :5], i1[:, :5])


def _features(n, t=6, d=24, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(4, d)).astype(np.float32)
    tokens = (rng.normal(size=(n, t, 8, 4)) @ base + 0.05 * rng.normal(size=(n, t, 8, d))
              ).astype(np.float32)
    return ClipFeatures(tokens=tokens, n_time=np.full(n, t), utt=tokens.mean((1, 2)),
                        asp=None, band_att=None,
                        domain=np.array(["source"] * (n - 3) + ["target"] * 3, dtype=object),
                        names=np.array([f"c{i}" for i in range(n)], dtype=object))


def test_fine_scorer_with_search_dim_matches_the_exact_maps():
    bank, test = _features(40, seed=9), _features(10, seed=10)
    exact = FinePatchScorer(FineParams()).fit(bank)
    bounded = FinePatchScorer(FineParams(search_dim=8, search_candidates=64)).fit(bank)
    np.testing.assert_allclose(bounded.maps(test), exact.maps(test), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bounded.self_maps, exact.self_maps, rtol=1e-4, atol=1e-5)
    assert bounded.search_stats.queries == 8 * (40 + 10) * 6


def test_search_dim_needs_euclidean_and_enough_candidates():
    with pytest.raises(ValueError, match="euclidean"):
        FineParams(metric="cosine", search_dim=8)
    with pytest.raises(ValueError, match="search_candidates"):
        FineParams(search_dim=8, search_candidates=8)
    with pytest.raises(ValueError, match="k_candidates"):
        FineParams(search_dim=8, k_candidates=None)


def test_fine_branches_of_one_machine_share_one_fit_and_never_a_stale_one(monkeypatch):
    """score_machine builds fine_broad, then fine_selective: one fit of the scorer serves
    both; a bank whose content differs anywhere gets its own fit."""
    import pandas as pd

    from asdlib import scoring
    from asdlib.branches import clear_scorer_cache

    fits = []
    original = FinePatchScorer.fit
    monkeypatch.setattr(FinePatchScorer, "fit", lambda self, bank: fits.append(1) or
                        original(self, bank))
    clear_scorer_cache()
    bank, test = _features(30, seed=11), _features(8, seed=12)
    table = pd.DataFrame({"machine": "m", "name": test.names, "split": "test",
                          "domain": "source", "label": "normal"})
    specs = [scoring.BranchSpec("fine_broad"), scoring.BranchSpec("fine_selective")]
    scoring.score_machine(lambda split, layer: bank if split == "train" else test,
                          specs, "m", table)
    assert len(fits) == 1
    changed = ClipFeatures(tokens=bank.tokens.copy(), n_time=bank.n_time, utt=bank.utt,
                           asp=None, band_att=None, domain=bank.domain, names=bank.names)
    changed.tokens[-1, -1, -1, -1] += 1.0      # one value of the last clip
    scoring.score_machine(lambda split, layer: changed if split == "train" else test,
                          specs, "m", table)
    assert len(fits) == 2


def test_a_stored_fit_is_read_back_equal_and_only_for_its_bank_and_settings(tmp_path):
    """Inside stored_fits a fit is written once; a later process (memory cache cleared)
    reads it back with the same densities, self maps and test maps; another bank or other
    settings fit again; an unreadable file is refitted and replaced."""
    from asdlib.branches import clear_scorer_cache, stored_fits
    from asdlib.branches.token_scorer import shared_scorer

    bank, test = _features(30, seed=21), _features(8, seed=22)
    params = FineParams(k_ldn=4, k_candidates=4)
    clear_scorer_cache()
    with stored_fits(tmp_path):
        first = shared_scorer(bank, params)
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 1 and first.restored_from is None
    clear_scorer_cache()
    with stored_fits(tmp_path):
        again = shared_scorer(bank, params)
    assert again.restored_from == files[0]
    assert np.array_equal(again.self_maps, first.self_maps, equal_nan=True)
    for a, b in zip(again.rho, first.rho):
        assert np.array_equal(a, b)
    assert np.array_equal(again.maps(test), first.maps(test), equal_nan=True)

    clear_scorer_cache()
    other = _features(30, seed=23)
    with stored_fits(tmp_path):
        assert shared_scorer(other, params).restored_from is None
        assert shared_scorer(bank, FineParams(k_ldn=2, k_candidates=4)).restored_from is None
    assert len(list(tmp_path.glob("*.npz"))) == 3

    files[0].write_bytes(b"not a fit")
    clear_scorer_cache()
    with stored_fits(tmp_path):
        refit = shared_scorer(bank, params)
    assert refit.restored_from is None
    assert np.array_equal(refit.self_maps, first.self_maps, equal_nan=True)
    clear_scorer_cache()
    with stored_fits(tmp_path):
        assert shared_scorer(bank, params).restored_from == files[0]   # replaced by the refit
    clear_scorer_cache()
    assert shared_scorer(bank, params).restored_from is None           # outside: nothing read


def test_a_stored_fit_keeps_the_bounded_search_projections(tmp_path):
    from asdlib.branches import clear_scorer_cache, stored_fits
    from asdlib.branches.token_scorer import shared_scorer

    bank, test = _features(30, seed=24), _features(8, seed=25)
    params = FineParams(k_ldn=4, k_candidates=4, search_dim=6)
    clear_scorer_cache()
    with stored_fits(tmp_path):
        first = shared_scorer(bank, params)
        clear_scorer_cache()
        again = shared_scorer(bank, params)
    assert again.restored_from is not None
    for a, b in zip(again.projections, first.projections):
        assert a.dim == b.dim == 6 and np.array_equal(a.components, b.components)
    assert np.array_equal(again.maps(test), first.maps(test), equal_nan=True)


def test_fine_scorer_through_an_inverted_file_visiting_every_cell_matches_the_flat_maps():
    bank, test = _features(60, seed=26), _features(10, seed=27)
    flat = FinePatchScorer(FineParams(k_ldn=4, k_candidates=8)).fit(bank)
    ivf = FinePatchScorer(FineParams(k_ldn=4, k_candidates=8, ivf_lists=4, ivf_probe=4)).fit(bank)
    np.testing.assert_allclose(ivf.maps(test), flat.maps(test), rtol=1e-4, equal_nan=True)
    np.testing.assert_allclose(ivf.self_maps, flat.self_maps, rtol=1e-4, equal_nan=True)
    with pytest.raises(ValueError, match="not both"):
        FineParams(ivf_lists=4, search_dim=8)


def test_writing_a_fit_removes_the_fits_of_other_code(tmp_path):
    from asdlib.branches import clear_scorer_cache, stored_fits
    from asdlib.branches.token_scorer import shared_scorer

    stale = tmp_path / "0123456789abcdef-0000.npz"     # written by other fitting code
    stale.write_bytes(b"old")
    clear_scorer_cache()
    with stored_fits(tmp_path):
        shared_scorer(_features(20, seed=28), FineParams(k_ldn=4, k_candidates=4))
    assert not stale.exists() and len(list(tmp_path.glob("*.npz"))) == 1
