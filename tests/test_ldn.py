"""asdlib.ldn against its definition (brute force)."""

import numpy as np
import pytest

from asdlib.knn import knn_search
from asdlib.ldn import (density_from_distances, ldn_from_candidates, ldn_scores, ldn_self_scores,
                        local_density)


def _unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _dist(a, b):
    return 1.0 - _unit(a) @ _unit(b).T


def _ref_rho(bank, K, groups):
    d = _dist(bank, bank)
    d[groups[:, None] == groups[None, :]] = np.inf
    return np.sort(d, axis=1)[:, :K].mean(1)


def _ref_ratios(q, bank, rho, eps, kc=None, bg=None, qg=None):
    """(M, N) float64 ratios d / (eps + rho), inf outside the candidates."""
    d = 1.0 - _unit64(q) @ _unit64(bank).T
    if bg is not None:
        d[qg[:, None] == bg[None, :]] = np.inf
    if kc is not None:   # only the kc raw nearest are candidates
        far = np.argsort(d, axis=1, kind="stable")[:, kc:]
        np.put_along_axis(d, far, np.inf, 1)
    return d / (eps + rho[None, :].astype(np.float64))


def _ref_ldn(q, bank, rho, eps, kc=None, bg=None, qg=None):
    r = _ref_ratios(q, bank, rho, eps, kc, bg, qg)
    return r.min(1), r.argmin(1)


def _unit64(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _assert_ldn(s, a, q, bank, rho, eps, kc=None, bg=None, qg=None):
    """Scores equal the definition up to float32 error of 1 - cos (~1e-6 / (eps + rho)),
    and the returned index attains the minimum (up to the same error)."""
    r = _ref_ratios(q, bank, rho, eps, kc, bg, qg)
    ref = r.min(1)
    tol = 4e-6 / (eps + rho.min()) + 1e-5 * ref
    assert np.all(np.abs(s - ref) <= tol)
    assert np.all(r[np.arange(len(r)), a] - ref <= 2 * tol)


@pytest.fixture
def bank():
    rng = np.random.default_rng(0)
    # clusters of very different spread, so densities differ a lot
    centres = rng.standard_normal((6, 12))
    spread = np.array([0.05, 0.1, 0.3, 0.6, 1.0, 2.0])
    lab = rng.integers(0, 6, 240)
    x = centres[lab] + spread[lab, None] * rng.standard_normal((240, 12))
    groups = np.arange(240) // 4
    q = centres[rng.integers(0, 6, 50)] + 0.5 * rng.standard_normal((50, 12))
    return x.astype(np.float32), groups, q.astype(np.float32)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_local_density_definition(bank, backend):
    x, groups, _ = bank
    rho = local_density(x, K=5, groups=groups, backend=backend)
    np.testing.assert_allclose(rho, _ref_rho(x, 5, groups), atol=2e-6)
    rho1 = local_density(x, K=5)     # default: only the item itself left out
    np.testing.assert_allclose(rho1, _ref_rho(x, 5, np.arange(len(x))), atol=2e-6)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("kc", [None, 1, 4, 16])
def test_ldn_scores_definition(bank, backend, kc):
    x, groups, q = bank
    rho = _ref_rho(x, 5, groups).astype(np.float32)
    s, a = ldn_scores(q, x, rho, eps=1e-3, k_candidates=kc, backend=backend)
    _assert_ldn(s, a, q, x, rho, 1e-3, kc)


def test_argmin_can_differ_from_nearest_neighbour(bank):
    x, groups, q = bank
    rho = local_density(x, K=5, groups=groups)
    s, a = ldn_scores(q, x, rho, eps=1e-3)
    _, nn = knn_search(q, x, 1)
    assert (a != nn[:, 0]).any()
    # hand-made: the nearest reference sits in a dense region, the next one in a sparse one
    bank2 = np.array([[1.0, 0.10], [1.0, 0.11], [1.0, 0.12], [1.0, -0.5], [1.0, -1.5]], np.float32)
    rho2 = local_density(bank2, K=1)
    query = np.array([[1.0, -0.1]], np.float32)
    s2, a2 = ldn_scores(query, bank2, rho2, eps=1e-6)
    _, nn2 = knn_search(query, bank2, 1)
    assert nn2[0, 0] == 0 and a2[0] == 3
    ref_s, _ = _ref_ldn(query, bank2, rho2, 1e-6)
    np.testing.assert_allclose(s2, ref_s, rtol=1e-4)


@pytest.mark.parametrize("kc", [None, 8])
def test_leave_one_out_self_scores(bank, kc):
    x, groups, _ = bank
    rho = local_density(x, K=5, groups=groups)
    s, a = ldn_self_scores(x, rho, 1e-3, groups=groups, k_candidates=kc)
    _assert_ldn(s, a, x, x, rho, 1e-3, kc, groups, groups)
    assert not (groups[a] == groups).any()          # never the item's own clip
    assert (s > 0).all()


def test_duplicate_query_scores_zero(bank):
    x, groups, _ = bank
    rho = local_density(x, K=5, groups=groups)
    s, a = ldn_scores(x[:10], x, rho)
    assert np.abs(s).max() < 1e-4
    np.testing.assert_array_equal(a, np.arange(10))


def test_candidates_helper_and_density_padding():
    dist = np.array([[0.1, 0.2, np.inf], [0.3, np.inf, np.inf], [np.inf, np.inf, np.inf]], np.float32)
    idx = np.array([[0, 1, -1], [2, -1, -1], [-1, -1, -1]])
    rho = np.array([1.0, 0.1, 0.5], np.float32)
    np.testing.assert_allclose(density_from_distances(dist, 2), [0.15, 0.3, 0.0], rtol=1e-6)
    s, a = ldn_from_candidates(dist, idx, rho, eps=0.0)
    np.testing.assert_allclose(s[:2], [0.1, 0.6], rtol=1e-6)
    np.testing.assert_array_equal(a, [0, 2, -1])
    assert np.isinf(s[2])


def _l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))


@pytest.mark.parametrize("kc", [None, 5])
def test_euclidean_ldn_matches_its_definition(kc):
    rng = np.random.default_rng(3)
    bank = (rng.standard_normal((120, 16)) * rng.uniform(0.5, 2.0, (120, 1))).astype(np.float32)
    queries = (rng.standard_normal((30, 16)) * 1.5).astype(np.float32)
    groups = np.arange(120) // 4
    rho = local_density(bank, K=6, groups=groups, metric="euclidean")
    d = _l2(bank, bank)
    d[groups[:, None] == groups[None, :]] = np.inf
    np.testing.assert_allclose(rho, np.sort(d, 1)[:, :6].mean(1), rtol=1e-4)
    scores, arg = ldn_scores(queries, bank, rho, 1e-3, kc, metric="euclidean")
    ratio = _l2(queries, bank) / (1e-3 + rho[None].astype(np.float64))
    if kc is not None:
        far = np.argsort(_l2(queries, bank), axis=1, kind="stable")[:, kc:]
        np.put_along_axis(ratio, far, np.inf, 1)
    np.testing.assert_allclose(scores, ratio.min(1), rtol=1e-4)
    np.testing.assert_array_equal(arg, ratio.argmin(1))
    own, _ = ldn_self_scores(bank, rho, 1e-3, groups, metric="euclidean")
    self_ratio = _l2(bank, bank) / (1e-3 + rho[None].astype(np.float64))
    self_ratio[groups[:, None] == groups[None, :]] = np.inf
    np.testing.assert_allclose(own, self_ratio.min(1), rtol=1e-4)


def test_k_is_capped_by_the_smallest_domain():
    from asdlib.ldn import capped_k

    assert capped_k(16, ["source"] * 990 + ["target"] * 10) == 5
    assert capped_k(16, ["source"] * 100 + ["target"] * 100) == 16
    assert capped_k(16, ["source"] * 50) == 16          # one domain: nothing to balance
    assert capped_k(16, ["source"] * 50 + ["target"] * 1) == 1
