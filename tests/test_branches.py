"""asdlib.branches: every branch against a brute-force numpy reference on small random
data, leave-one-out, masking of padded tokens, domain handling, maps, parameters."""

import dataclasses

import numpy as np
import pytest

from asdlib.branches import BRANCHES, BranchResult, band_pool, make_branch
from asdlib.features import ClipFeatures

T, D = 6, 16
EPS = 1e-3


def make_feats(rng, n, n_target=3, t=T, d=D, seed_shift=0.0, pad_value=0.0):
    """Random clips with structure: a machine-wide pattern per (time, band) plus noise."""
    base = rng.standard_normal((1, 1, 8, d))
    tok = base + 0.8 * rng.standard_normal((n, t, 8, d)) + seed_shift
    n_time = rng.integers(3, t + 1, n)
    n_time[0] = t
    for i in range(n):
        tok[i, n_time[i]:] = pad_value
    tok = tok.astype(np.float16)
    utt = np.stack([tok[i, :n_time[i]].astype(np.float32).mean((0, 1)) for i in range(n)])
    return ClipFeatures(
        tokens=tok, n_time=n_time, utt=utt,
        asp=rng.standard_normal((n, 10)).astype(np.float32),
        band_att=rng.standard_normal((n, 8, d)).astype(np.float32),
        domain=np.array(["source"] * (n - n_target) + ["target"] * n_target, dtype=object),
        names=np.array([f"clip_{i:03d}.wav" for i in range(n)]),
    )


@pytest.fixture(scope="module")
def bank():
    return make_feats(np.random.default_rng(0), 14, n_target=4)


@pytest.fixture(scope="module")
def test_set():
    return make_feats(np.random.default_rng(1), 5, n_target=2)


# ------------------------------------------------------------------ references

def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ref_pool(f, how):
    n = len(f.tokens)
    out = np.zeros((n, 8, f.tokens.shape[3]))
    for i in range(n):
        for b in range(8):
            v = f.tokens[i, :f.n_time[i], b].astype(np.float32)
            out[i, b] = v.mean(0) if how == "mean" else v.max(0)
    return out


def ref_descriptor(name, f):
    """(N, V, E) views of the clip-level branches, by explicit loops."""
    if name == "utt_knn":
        return np.asarray(f.utt, np.float64)[:, None]
    if name == "asp_knn":
        return np.asarray(f.asp, np.float64)[:, None]
    if name == "band_knn":
        m = _unit(ref_pool(f, "mean"))
        return m.reshape(len(m), 1, -1)
    if name == "beam_mean":
        return ref_pool(f, "mean")
    if name == "beam_max":
        return ref_pool(f, "max")
    raise KeyError(name)


def capped(K, domains):
    """LDN's K: at most half the smallest domain's count (asdlib.ldn.capped_k)."""
    _, counts = np.unique(np.asarray(domains).astype(str), return_counts=True)
    return K if len(counts) < 2 else max(1, min(K, counts.min() // 2))


def ref_vector(bank_desc, test_desc, ldn, K=16, kc=None, domains=None):
    """Per-view nearest (or LDN) distance, mean over views: test (M,), self (N,)."""
    test_s, self_s = [], []
    if domains is not None:
        K = capped(K, domains)
    for v in range(bank_desc.shape[1]):
        b, q = _unit(bank_desc[:, v]), _unit(test_desc[:, v])
        dq = 1 - q @ b.T
        db = 1 - b @ b.T
        np.fill_diagonal(db, np.inf)                 # leave-one-out: never the clip itself
        if ldn:
            rho = np.sort(db, 1)[:, :min(K, len(b) - 1)].mean(1)
            dq, db = dq / (EPS + rho), db / (EPS + rho)
        test_s.append(dq.min(1))
        self_s.append(db.min(1))
    return np.mean(test_s, 0), np.mean(self_s, 0)


def _pairwise(a, b, metric):
    if metric == "cosine":
        return 1 - a @ b.T
    return np.sqrt(np.maximum(0.0, ((a[:, None] - b[None]) ** 2).sum(-1)))


def ref_fine_maps(bank, test, ldn=True, K=16, kc=32, keep=None, metric="euclidean"):
    """Per-token calibrated distances. Returns test maps (M, T', 8), self maps (N, T', 8).

    keep: optional per band list of bank-token positions (into the valid token list) that
    form the bank (coreset); self maps are always computed for every bank clip's tokens."""
    n, t = bank.tokens.shape[:2]
    tmaps = np.full((len(test), t, 8), np.nan)
    smaps = np.full((n, t, 8), np.nan)
    bclip, btime = np.nonzero(bank.valid_time())
    qclip, qtime = np.nonzero(test.valid_time())
    K = capped(K, np.asarray(bank.domain)[bclip])
    prep = _unit if metric == "cosine" else (lambda v: np.asarray(v, np.float64))
    for b in range(8):
        x_all = prep(bank.tokens[bclip, btime, b].astype(np.float32))
        sel = np.arange(len(x_all)) if keep is None else keep[b]
        x, g = x_all[sel], bclip[sel]

        def calibrated(q, qgroups):
            d = _pairwise(q, x, metric)
            if qgroups is not None:
                d[qgroups[:, None] == g[None, :]] = np.inf
            if not ldn:
                return d.min(1)
            if kc is not None:
                far = np.argsort(d, 1, kind="stable")[:, kc:]
                np.put_along_axis(d, far, np.inf, 1)
            return (d / (EPS + rho)).min(1)

        dbb = _pairwise(x, x, metric)
        dbb[g[:, None] == g[None, :]] = np.inf
        rho = np.array([r[np.isfinite(r)][:K].mean() for r in np.sort(dbb, 1)])
        q = prep(test.tokens[qclip, qtime, b].astype(np.float32))
        tmaps[qclip, qtime, b] = calibrated(q, None)
        smaps[bclip, btime, b] = calibrated(x_all, bclip)
    return tmaps, smaps


def ref_broad(maps, q=100.0):
    out = []
    for m in maps:
        v = np.sort(m[np.isfinite(m)])[::-1]
        out.append(v[:max(1, int(np.ceil(len(v) * q / 100)))].mean())
    return np.array(out)


def ref_band_max(maps):
    return np.array([np.mean([np.nanmax(m[:, b]) for b in range(8)]) for m in maps])


def ref_topk(maps, k):
    return np.array([np.sort(m[np.isfinite(m)])[::-1][:k].mean() for m in maps])


def close(a, b, tol=2e-4):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol)


# ------------------------------------------------------------------ clip-level branches

@pytest.mark.parametrize("name", ["utt_knn", "asp_knn", "band_knn", "beam_mean", "beam_max"])
@pytest.mark.parametrize("ldn", [False, True])
def test_vector_branches_match_reference(bank, test_set, name, ldn):
    branch = make_branch(name, ldn=ldn, k_ldn=4).fit(bank)
    res = branch.score(test_set)
    ref_t, ref_s = ref_vector(ref_descriptor(name, bank), ref_descriptor(name, test_set), ldn, K=4,
                              domains=bank.domain)
    assert isinstance(res, BranchResult) and res.maps is None and res.scores.shape == (5,)
    close(res.scores, ref_t)
    close(branch.self_scores(), ref_s)


def _z(own, x):
    return (x - own.mean()) / own.std()


@pytest.mark.parametrize("combine", ["mean", "max"])
def test_multiview_branches_match_reference(bank, test_set, combine):
    streams = {
        "adabeam": [ref_pool(bank, "mean"), ref_pool(bank, "max")],
        "subband3": [ref_pool(bank, "mean"), ref_pool(bank, "max"), np.asarray(bank.band_att, np.float64)],
    }
    tstreams = {
        "adabeam": [ref_pool(test_set, "mean"), ref_pool(test_set, "max")],
        "subband3": [ref_pool(test_set, "mean"), ref_pool(test_set, "max"),
                     np.asarray(test_set.band_att, np.float64)],
    }
    agg = np.mean if combine == "mean" else np.max
    for name in ("adabeam", "subband3"):
        branch = make_branch(name, combine=combine).fit(bank)
        zt, zs = [], []
        for bd, td in zip(streams[name], tstreams[name]):
            t, s = ref_vector(bd, td, ldn=False)
            zt.append(_z(s, t))
            zs.append(_z(s, s))
        close(branch.score(test_set).scores, agg(zt, 0))
        close(branch.self_scores(), agg(zs, 0))


# ------------------------------------------------------------------ fine-grained branches

@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("kc", [32, 3, None])
def test_fine_branches_match_reference(bank, test_set, kc, metric):
    kw = dict(k_ldn=5, k_candidates=kc, metric=metric)
    broad = make_branch("fine_broad", q=30, **kw).fit(bank)
    sel = make_branch("fine_selective", **kw).fit(bank)
    topk = make_branch("fine_selective", mode="topk", topk=4, **kw).fit(bank)
    tmaps, smaps = ref_fine_maps(bank, test_set, K=5, kc=kc, metric=metric)
    rb = broad.score(test_set)
    assert rb.maps.shape == (5, T, 8)
    close(rb.maps, tmaps)
    assert (np.isnan(rb.maps) == np.isnan(tmaps)).all()
    close(rb.scores, ref_broad(tmaps, 30))
    close(broad.self_scores(), ref_broad(smaps, 30))
    close(sel.score(test_set).scores, ref_band_max(tmaps))
    close(sel.self_scores(), ref_band_max(smaps))
    close(topk.score(test_set).scores, ref_topk(tmaps, 4))
    close(topk.self_scores(), ref_topk(smaps, 4))


def test_fine_without_ldn_matches_reference(bank, test_set):
    branch = make_branch("fine_broad", ldn=False, q=100).fit(bank)
    tmaps, smaps = ref_fine_maps(bank, test_set, ldn=False)
    close(branch.score(test_set).maps, tmaps)
    close(branch.self_scores(), ref_broad(smaps))


def test_fine_branches_share_one_scorer(bank, test_set):
    a = make_branch("fine_broad", k_ldn=5).fit(bank)
    b = make_branch("fine_selective", k_ldn=5).fit(bank)
    c = make_branch("fine_selective", k_ldn=6).fit(bank)
    assert a.scorer is b.scorer and a.scorer is not c.scorer
    np.testing.assert_array_equal(a.score(test_set).maps, b.score(test_set).maps)


def test_fine_coreset(bank, test_set):
    # coreset = 1 keeps the bank but computes self maps by the separate path: same result
    full = make_branch("fine_broad", k_ldn=5, q=100).fit(bank)
    one = make_branch("fine_broad", k_ldn=5, coreset=1.0, q=100).fit(bank)
    close(one.self_scores(), full.self_scores())
    close(one.score(test_set).scores, full.score(test_set).scores)
    half = make_branch("fine_broad", k_ldn=5, coreset=0.5, coreset_proj=None, q=100).fit(bank)
    sc = half.scorer
    n_src = int(sum(bank.n_time[i] for i in range(len(bank)) if bank.domain[i] == "source"))
    n_tgt = int(bank.n_time.sum()) - n_src
    assert sc.n_bank_tokens == [int(np.ceil(0.5 * n_src)) + n_tgt] * 8
    tmaps, smaps = ref_fine_maps(bank, test_set, K=5, keep=sc.keep)
    close(half.score(test_set).maps, tmaps)
    close(half.self_scores(), ref_broad(smaps))
    # raw distances can only grow when the bank shrinks
    raw_full = make_branch("fine_broad", ldn=False).fit(bank).score(test_set).maps
    raw_half = make_branch("fine_broad", ldn=False, coreset=0.5).fit(bank).score(test_set).maps
    ok = np.isfinite(raw_full)
    assert (raw_half[ok] >= raw_full[ok] - 1e-6).all()
    # n_self: only that many clips get self-scores (the others are NaN)
    part = make_branch("fine_broad", k_ldn=5, coreset=0.5, n_self=5).fit(bank)
    assert np.isfinite(part.self_scores()).sum() == 5


def test_planted_anomalous_token_localised(bank):
    rng = np.random.default_rng(5)
    clip = bank.subset(np.array([0, 0]))          # a bank clip, twice
    tok = clip.tokens.astype(np.float32) + 0.01 * rng.standard_normal(clip.tokens.shape)
    tok[0, 3, 5] = 4.0 * rng.standard_normal(D)   # planted anomaly at t = 3, band 5
    test = ClipFeatures(tok.astype(np.float16), clip.n_time, clip.utt, clip.asp, clip.band_att,
                        clip.domain, np.array(["a.wav", "b.wav"]))
    for name in ("fine_broad", "fine_selective"):
        res = make_branch(name, k_ldn=5).fit(bank).score(test)
        assert res.maps.shape == (2, T, 8)
        assert np.unravel_index(np.nanargmax(res.maps[0]), (T, 8)) == (3, 5)
        assert res.scores[0] > res.scores[1]


# ------------------------------------------------------------------ leave-one-out, masking

ALL_UNION = [(name, {}) for name in BRANCHES] + [(name, {"ldn": True}) for name in BRANCHES
                                                 if not name.startswith("fine")]


@pytest.mark.parametrize("name,kw", ALL_UNION)
def test_bank_clip_in_test_scores_minimum_but_not_in_self_scores(bank, name, kw):
    branch = make_branch(name, k_ldn=4, **kw).fit(bank)
    dup = bank.subset(np.array([2, 7]))
    scores = branch.score(dup).scores
    own = branch.self_scores()
    if name in ("adabeam", "subband3"):
        # every stream distance is 0: score = combination of (0 - mu) / sd per stream
        parts = branch._parts[0].core
        lowest = np.mean([-mu / sd for *_, mu, sd in parts])
        close(scores, [lowest, lowest], 1e-4)
        assert (own > lowest + 1e-3).all()
    else:
        assert np.abs(scores).max() < 1e-4
        assert (own > 1e-3).all()


def test_fine_self_scores_never_use_own_clip():
    rng = np.random.default_rng(3)
    f = make_feats(rng, 8, n_target=2)
    # clip 0 is constant over time: its tokens match each other exactly
    tok = f.tokens.copy()
    tok[0] = tok[0, :1]
    f = ClipFeatures(tok, f.n_time, f.utt, f.asp, f.band_att, f.domain, f.names)
    for kw in ({}, {"coreset": 1.0}, {"k_candidates": None}, {"ldn": False}):
        branch = make_branch("fine_broad", k_ldn=3, **kw).fit(f)
        assert branch.self_scores()[0] > 0.05
        assert (np.nan_to_num(branch.scorer.self_maps[0], nan=1.0) > 0.05).all()


@pytest.mark.parametrize("name", list(BRANCHES))
def test_padded_tokens_never_matched(bank, test_set, name):
    """Padded bank tokens set to copies of test tokens change nothing."""
    ref = make_branch(name).fit(bank)
    tok = bank.tokens.copy()
    for i in range(len(bank)):
        tok[i, bank.n_time[i]:] = test_set.tokens[0, 0]
    poisoned = ClipFeatures(tok, bank.n_time, bank.utt, bank.asp, bank.band_att, bank.domain, bank.names)
    other = make_branch(name).fit(poisoned)
    close(other.score(test_set).scores, ref.score(test_set).scores, 1e-5)
    close(other.self_scores(), ref.self_scores(), 1e-5)


def test_band_pool_ignores_padding(bank):
    close(band_pool(bank, "mean"), ref_pool(bank, "mean"), 1e-5)
    close(band_pool(bank, "max"), ref_pool(bank, "max"), 1e-5)


# ------------------------------------------------------------------ domains, backends, params

@pytest.mark.parametrize("name,kw", [("utt_knn", {}), ("beam_max", {"ldn": True}),
                                     ("adabeam", {}), ("fine_broad", {"k_ldn": 4})])
def test_separate_domains(bank, test_set, name, kw):
    branch = make_branch(name, domain="separate", **kw).fit(bank)
    src_rows = np.flatnonzero(bank.domain == "source")
    tgt_rows = np.flatnonzero(bank.domain == "target")
    src, tgt = bank.subset(src_rows), bank.subset(tgt_rows)
    bs, bt = make_branch(name, **kw).fit(src), make_branch(name, **kw).fit(tgt)
    ss, st = bs.self_scores().astype(np.float64), bt.self_scores().astype(np.float64)
    rs, rt = bs.score(test_set), bt.score(test_set)
    zs, zt = _z(ss, rs.scores), _z(st, rt.scores)
    res = branch.score(test_set)
    close(res.scores, np.minimum(zs, zt), 1e-4)
    if rs.maps is not None:
        expect = np.where((zs <= zt)[:, None, None], rs.maps, rt.maps)
        close(res.maps, expect, 1e-5)
    own = branch.self_scores()
    close(own[src_rows], np.minimum(_z(ss, ss), _z(st, bt.score(src).scores)), 1e-4)
    close(own[tgt_rows], np.minimum(_z(st, st), _z(ss, bs.score(tgt).scores)), 1e-4)


def test_separate_needs_two_clips_per_domain(bank):
    one_target = bank.subset(np.arange(len(bank) - 3))
    with pytest.raises(ValueError, match="target"):
        make_branch("utt_knn", domain="separate").fit(one_target)


@pytest.mark.parametrize("name", ["utt_knn", "beam_mean", "fine_selective"])
def test_torch_backend_agrees(bank, test_set, name):
    a = make_branch(name, ldn=True).fit(bank)
    b = make_branch(name, ldn=True, backend="torch").fit(bank)
    close(a.score(test_set).scores, b.score(test_set).scores, 1e-5)
    close(a.self_scores(), b.self_scores(), 1e-5)


def test_params_recorded(bank, test_set):
    branch = make_branch("fine_broad", k_ldn=8, q=20)
    assert branch.params["k_ldn"] == 8 and branch.params["q"] == 20
    expected = {"ldn", "eps", "k_candidates", "coreset", "domain", "backend", "device", "n_self"}
    assert expected <= set(branch.params)
    res = branch.fit(bank).score(test_set)
    assert res.params == branch.params and res.name == "fine_broad"
    for name, cls in BRANCHES.items():
        b = make_branch(name)  # the defaults are the parameter dataclass's, defined once
        assert b.config == cls.Params() and b.params == dataclasses.asdict(cls.Params())
        assert b.name == name
    assert make_branch("adabeam").params["combine"] == "mean"
    assert make_branch("fine_broad").params["metric"] == "euclidean"
    assert make_branch("utt_knn").params["metric"] == "cosine"
    with pytest.raises(ValueError, match="metric"):
        make_branch("fine_broad", metric="manhattan")
    with pytest.raises(TypeError):
        make_branch("utt_knn", q=10)
    with pytest.raises(KeyError):
        make_branch("nope")
    with pytest.raises(ValueError):
        make_branch("utt_knn", domain="both")
    with pytest.raises(RuntimeError):
        make_branch("utt_knn").score(test_set)


def test_missing_optional_features(bank):
    no_asp = ClipFeatures(bank.tokens, bank.n_time, bank.utt, None, None, bank.domain, bank.names)
    with pytest.raises(ValueError, match="asp"):
        make_branch("asp_knn").fit(no_asp)
    with pytest.raises(ValueError, match="band_att"):
        make_branch("subband3").fit(no_asp)


def test_the_run_options_fine_search_settings_are_the_patch_specs_options():
    """`--fine-search` names exactly the scoring module's settings; "exact" is notebook 04's
    default specs, the others add their branch parameters (validated by FineParams)."""
    from asdlib import experiment, scoring

    assert tuple(scoring.FINE_SEARCH) == experiment.FINE_SEARCHES
    assert scoring.patch_specs("exact") == scoring.PATCH_SPECS
    for search in experiment.FINE_SEARCHES:
        for spec in scoring.patch_specs(search):
            branch = make_branch(spec.branch, **spec.params)
            assert {k: getattr(branch.config, k) for k in scoring.FINE_SEARCH[search]} == \
                scoring.FINE_SEARCH[search]
    with pytest.raises(ValueError, match="fine search"):
        scoring.patch_specs("fastest")
