"""asdlib.knn: exact search against brute force (faiss and torch), leave-one-out
exclusion, batching, coreset properties."""

import numpy as np
import pytest

from asdlib.knn import covering_radius, greedy_coreset, knn_search, knn_self, l2_normalize


def _unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(q, b, k, bg=None, qg=None):
    d = 1.0 - _unit(q) @ _unit(b).T
    if bg is not None:
        d[np.asarray(qg)[:, None] == np.asarray(bg)[None, :]] = np.inf
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((257, 24)).astype(np.float32)
    queries = rng.standard_normal((61, 24)).astype(np.float32)
    return rng, bank, queries


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_matches_brute_force(data, backend):
    _, bank, queries = data
    dist, idx = knn_search(queries, bank, 7, batch_size=16, backend=backend)
    ref_d, ref_i = _brute(queries, bank, 7)
    assert dist.shape == (61, 7) and idx.shape == (61, 7) and dist.dtype == np.float32
    np.testing.assert_allclose(dist, ref_d, atol=2e-6)
    np.testing.assert_array_equal(idx, ref_i)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_group_exclusion_matches_brute_force(data, backend):
    rng, bank, queries = data
    bg = np.arange(len(bank)) // 9                   # groups of 9 bank items
    qg = rng.integers(0, bg.max() + 1, len(queries))
    queries[:5] = bank[bg == qg[0]][:5]              # exact copies inside the excluded group
    qg[:5] = qg[0]
    dist, idx = knn_search(queries, bank, 5, bg, qg, batch_size=8, backend=backend)
    ref_d, ref_i = _brute(queries, bank, 5, bg, qg)
    np.testing.assert_allclose(dist, ref_d, atol=2e-6)
    np.testing.assert_array_equal(idx, ref_i)
    assert not (bg[idx] == qg[:, None]).any()


def test_faiss_and_torch_agree_on_float16(data):
    _, bank, queries = data
    b16, q16 = bank.astype(np.float16), queries.astype(np.float16)
    d1, i1 = knn_search(q16, b16, 4, backend="faiss")
    d2, i2 = knn_search(q16, b16, 4, backend="torch")
    np.testing.assert_allclose(d1, d2, atol=2e-6)
    np.testing.assert_array_equal(i1, i2)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_missing_neighbours_padded(backend):
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((6, 8))
    groups = np.array([0, 0, 0, 1, 1, 2])
    dist, idx = knn_search(bank, bank, 5, groups, groups, backend=backend)
    # item 0 (group 0) has 3 others available, item 5 (group 2) has 5
    assert (idx[0, :3] >= 0).all() and (idx[0, 3:] == -1).all() and np.isinf(dist[0, 3:]).all()
    assert (idx[5] >= 0).all()
    dist, idx = knn_search(bank[:2], bank[:3], 5, backend=backend)
    assert (idx[:, 3:] == -1).all() and np.isinf(dist[:, 3:]).all()


@pytest.mark.parametrize("block", [16, 50, 1000])
def test_knn_self_symmetric_matches_brute_force(data, block):
    rng, bank, _ = data
    bank = np.concatenate([bank, bank[:20]])          # exact duplicates in other groups
    groups = np.repeat(np.arange(60), 5)[:len(bank)]  # groups straddle block borders
    groups[-20:] = 70 + np.arange(20) // 7
    for g in (groups, None):
        dist, idx = knn_self(bank, 9, g, block=block)
        gg = np.arange(len(bank)) if g is None else g
        ref_d, ref_i = _brute(bank, bank, 9, gg, gg)
        np.testing.assert_allclose(dist, ref_d, atol=2e-6)
        full = 1.0 - _unit(bank) @ _unit(bank).T
        np.testing.assert_allclose(np.take_along_axis(full, idx, 1), dist, atol=2e-6)
        assert not (gg[idx] == gg[:, None]).any()
    # fewer than k others available: padded like knn_search
    small = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    d1, i1 = knn_self(bank[:10], 8, small, block=3)
    d2, i2 = knn_search(bank[:10], bank[:10], 8, small, small)
    np.testing.assert_allclose(d1, d2, atol=2e-6)
    np.testing.assert_array_equal(i1 < 0, i2 < 0)


def test_normalize_false_uses_vectors_as_given(data):
    _, bank, queries = data
    nb, nq = l2_normalize(bank), l2_normalize(queries)
    d1, i1 = knn_search(nq, nb, 3, normalize=False)
    d2, i2 = knn_search(queries, bank, 3)
    np.testing.assert_allclose(d1, d2, atol=1e-6)
    np.testing.assert_array_equal(i1, i2)


def test_bad_arguments(data):
    _, bank, queries = data
    with pytest.raises(ValueError):
        knn_search(queries, bank, 3, exclude_groups=np.zeros(len(bank)))
    with pytest.raises(ValueError):
        knn_search(queries, bank, 3, backend="annoy")
    with pytest.raises(ValueError):
        knn_search(queries, bank[:, :5], 3)


def test_faiss_gpu_request_without_gpu_is_clear(data):
    import faiss

    if faiss.get_num_gpus() > 0:
        pytest.skip("a faiss GPU is present; this checks the message of CPU-only builds")
    _, bank, queries = data
    with pytest.raises(RuntimeError, match="no GPU"):
        knn_search(queries, bank, 3, device="cuda")


def _cuda_available():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="GPU test: needs a CUDA device (torch backend on cuda)")
def test_torch_cuda_matches_cpu(data):
    rng, bank, queries = data
    bg = np.arange(len(bank)) // 9
    qg = rng.integers(0, bg.max() + 1, len(queries))
    d1, i1 = knn_search(queries, bank, 5, bg, qg, backend="torch", device="cuda")
    d2, i2 = knn_search(queries, bank, 5, bg, qg, backend="faiss", device="cpu")
    np.testing.assert_allclose(d1, d2, atol=1e-5)
    np.testing.assert_array_equal(i1, i2)
    s1 = greedy_coreset(bank, n=20, device="cuda", proj_dim=None)
    s2 = greedy_coreset(bank, n=20, device="cpu", proj_dim=None)
    np.testing.assert_array_equal(s1, s2)


# ------------------------------------------------------------------ coreset

def _brute_greedy(x, n, start):
    x = _unit(x)
    sel = [start]
    mind = ((x - x[start]) ** 2).sum(1)
    for _ in range(n - 1):
        j = int(np.argmax(mind))
        sel.append(j)
        mind = np.minimum(mind, ((x - x[j]) ** 2).sum(1))
    return np.array(sel)


def test_coreset_matches_brute_force_farthest_point(data):
    _, bank, _ = data
    sel = greedy_coreset(bank, n=40, seed=3, proj_dim=None)
    np.testing.assert_array_equal(sel, _brute_greedy(bank, 40, sel[0]))


def test_coreset_distinct_prefix_and_radius_shrinks(data):
    _, bank, _ = data
    for proj in (None, 8):
        big = greedy_coreset(bank, n=120, seed=1, proj_dim=proj)
        assert len(np.unique(big)) == 120 and big.dtype == np.int64
        small = greedy_coreset(bank, n=30, seed=1, proj_dim=proj)
        np.testing.assert_array_equal(big[:30], small)
        radii = [covering_radius(bank, bank[big[:n]]) for n in (5, 15, 30, 60, 120)]
        if proj is None:   # exact greedy: non-increasing in the original space
            assert all(a >= b for a, b in zip(radii, radii[1:]))
        assert radii[-1] < radii[0]


def test_coreset_distinct_with_duplicates_and_ratio():
    x = np.repeat(np.eye(4, dtype=np.float32), 10, axis=0)    # 4 distinct points, 10 copies each
    sel = greedy_coreset(x, n=12, proj_dim=None)
    assert len(np.unique(sel)) == 12
    assert len(np.unique(x[sel[:4]], axis=0)) == 4             # the 4 distinct points come first
    assert len(greedy_coreset(x, ratio=0.25)) == 10
    with pytest.raises(ValueError):
        greedy_coreset(x, n=3, ratio=0.1)
    with pytest.raises(ValueError):
        greedy_coreset(x, n=41)


def test_coreset_torch_path_matches_numpy(data):
    from asdlib.knn import _greedy_torch, _project

    _, bank, _ = data
    sel = greedy_coreset(bank, n=25, seed=2, proj_dim=8)
    xp = _project(bank, 8, 2, True)
    np.testing.assert_array_equal(_greedy_torch(xp, 25, int(sel[0]), "cpu"), sel)


def _brute_l2(q, b, k, bg=None, qg=None):
    d = np.sqrt(((np.asarray(q, np.float64)[:, None] - np.asarray(b, np.float64)[None]) ** 2).sum(-1))
    if bg is not None:
        d[np.asarray(qg)[:, None] == np.asarray(bg)[None, :]] = np.inf
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_euclidean_matches_brute_force_and_keeps_the_scale(data, backend):
    rng, bank, queries = data
    bank = bank * rng.uniform(0.5, 3.0, (len(bank), 1)).astype(np.float32)  # scales differ
    bg = np.arange(len(bank)) // 9
    qg = rng.integers(0, bg.max() + 1, len(queries))
    dist, idx = knn_search(queries, bank, 5, bg, qg, batch_size=8, backend=backend,
                           metric="euclidean")
    ref_d, ref_i = _brute_l2(queries, bank, 5, bg, qg)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(idx, ref_i)
    # a vector twice as long as a bank item is far from it in Euclidean, not in cosine
    twice = 2.0 * bank[:1]
    assert knn_search(twice, bank[:1], 1, metric="euclidean")[0][0, 0] > 1.0
    assert knn_search(twice, bank[:1], 1)[0][0, 0] < 1e-6


@pytest.mark.parametrize("block", [16, 50])
def test_knn_self_euclidean_symmetric_matches_brute_force(data, block):
    rng, bank, _ = data
    bank = bank * rng.uniform(0.5, 3.0, (len(bank), 1)).astype(np.float32)
    groups = np.repeat(np.arange(60), 5)[:len(bank)]
    dist, idx = knn_self(bank, 9, groups, block=block, metric="euclidean")
    ref_d, ref_i = _brute_l2(bank, bank, 9, groups, groups)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(idx, ref_i)
    with pytest.raises(ValueError, match="metric"):
        knn_search(bank, bank, 1, metric="manhattan")


def test_inverted_file_search_visiting_every_cell_is_the_flat_search_and_fewer_cells_approximate():
    rng = np.random.default_rng(31)
    centres = rng.normal(size=(16, 12)) * 4
    bank = (centres[rng.integers(16, size=1600)] + rng.normal(size=(1600, 12))).astype(np.float32)
    queries = (centres[rng.integers(16, size=200)] + rng.normal(size=(200, 12))).astype(np.float32)
    groups = np.arange(1600) // 10
    qgroups = np.arange(200) // 10
    exact = knn_search(queries, bank, 5, groups, qgroups, metric="euclidean")
    every = knn_search(queries, bank, 5, groups, qgroups, metric="euclidean", ivf=(16, 16))
    np.testing.assert_allclose(every[0], exact[0], rtol=1e-4, atol=1e-4)
    assert (every[1] == exact[1]).mean() > 0.99
    one = knn_search(queries, bank, 5, groups, qgroups, metric="euclidean", ivf=(16, 1))
    assert np.all(one[0] >= exact[0] - 1e-4)           # never nearer than the true neighbours
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(one[1], exact[1])])
    assert 0.5 < recall < 1.0
    found = one[1] >= 0
    assert not (groups[np.where(found, one[1], 0)] == qgroups[:, None])[found].any()  # own group left out
    with pytest.raises(ValueError, match="faiss"):
        knn_search(queries, bank, 5, metric="euclidean", backend="torch", ivf=(16, 1))
