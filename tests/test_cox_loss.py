"""The Cox partial likelihood against a brute-force double loop and scikit-survival."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fracsurv.survival import cox_nll


def brute_force_nll(eta, time, event, ties):
    """Textbook double loop over distinct event times (float64)."""
    total = 0.0
    for t in np.unique(time[event == 1]):
        dead = np.flatnonzero((time == t) & (event == 1))
        at_risk = np.flatnonzero(time >= t)
        r = np.exp(eta[at_risk]).sum()
        s = np.exp(eta[dead]).sum()
        d = len(dead)
        for k in range(d):
            total += math.log(r - (k / d) * s if ties == "efron" else r)
        total -= eta[dead].sum()
    return total


@st.composite
def survival_batches(draw):
    n = draw(st.integers(1, 40))
    # few distinct times -> heavy ties
    time = draw(arrays(np.int64, n, elements=st.integers(1, 5))).astype(float)
    event = draw(arrays(np.int64, n, elements=st.integers(0, 1)))
    eta = draw(arrays(np.float64, n, elements=st.floats(-5, 5)))
    return eta, time, event


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@settings(max_examples=60, deadline=None)
@given(batch=survival_batches())
def test_matches_brute_force_with_heavy_ties(ties, batch):
    eta, time, event = batch
    eta_t = torch.tensor(eta, requires_grad=True)
    loss = cox_nll(eta_t, torch.tensor(time), torch.tensor(event), ties=ties, reduction="sum")
    expected = brute_force_nll(eta, time, event, ties)
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-9)
    loss.backward()
    # gradient against central finite differences of the brute force
    h = 1e-6
    for i in range(min(len(eta), 5)):
        e1, e2 = eta.copy(), eta.copy()
        e1[i] += h
        e2[i] -= h
        fd = (brute_force_nll(e1, time, event, ties) - brute_force_nll(e2, time, event, ties)) / (2 * h)
        assert eta_t.grad[i].item() == pytest.approx(fd, abs=1e-5)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@settings(max_examples=30, deadline=None)
@given(batch=survival_batches(), shift=st.floats(-1e4, 1e4))
def test_shift_invariance(ties, batch, shift):
    eta, time, event = batch
    a = cox_nll(torch.tensor(eta), torch.tensor(time), torch.tensor(event), ties=ties)
    b = cox_nll(torch.tensor(eta + shift), torch.tensor(time), torch.tensor(event), ties=ties)
    assert a.item() == pytest.approx(b.item(), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_finite_for_extreme_log_hazards(dtype, ties):
    eta = torch.tensor([1e4, -1e4, 0.0, 1e4, -1e4, 3.0], dtype=dtype, requires_grad=True)
    time = torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    event = torch.tensor([1, 1, 1, 1, 1, 0])
    loss = cox_nll(eta, time, event, ties=ties)
    loss.backward()
    assert loss.dtype == dtype
    assert torch.isfinite(loss)
    assert torch.isfinite(eta.grad).all()


def test_no_events_is_zero_with_zero_gradient():
    eta = torch.randn(7, requires_grad=True)
    loss = cox_nll(eta, torch.arange(7.0) + 1, torch.zeros(7))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(eta.grad, torch.zeros(7))


def test_single_sample():
    eta = torch.tensor([2.5], requires_grad=True)
    loss = cox_nll(eta, torch.tensor([3.0]), torch.tensor([1]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(eta.grad).all()


def test_mean_is_sum_over_events():
    rng = np.random.default_rng(1)
    eta, time = torch.tensor(rng.normal(size=30)), torch.tensor(rng.integers(1, 8, 30) * 1.0)
    event = torch.tensor(rng.integers(0, 2, 30))
    s = cox_nll(eta, time, event, reduction="sum")
    m = cox_nll(eta, time, event, reduction="mean")
    assert m.item() == pytest.approx(s.item() / event.sum().item())


def test_efron_equals_breslow_without_ties():
    rng = np.random.default_rng(2)
    eta, time = torch.tensor(rng.normal(size=50)), torch.tensor(rng.permutation(50) + 1.0)
    event = torch.tensor(rng.integers(0, 2, 50))
    assert cox_nll(eta, time, event, ties="efron").item() == pytest.approx(
        cox_nll(eta, time, event, ties="breslow").item())


def test_bad_arguments():
    with pytest.raises(ValueError, match="ties"):
        cox_nll(torch.zeros(2), torch.ones(2), torch.ones(2), ties="exact")
    with pytest.raises(ValueError, match="same length"):
        cox_nll(torch.zeros(3), torch.ones(2), torch.ones(2))


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_sksurv_coefficients_are_a_stationary_point(ties):
    """scikit-survival's fitted linear Cox model zeroes the gradient of our loss."""
    from sksurv.column import encode_categorical
    from sksurv.datasets import load_whas500
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    X, y = load_whas500()
    X = encode_categorical(X).astype(float)
    model = CoxPHSurvivalAnalysis(ties=ties, tol=1e-12, n_iter=200).fit(X, y)
    beta = torch.tensor(model.coef_, requires_grad=True)
    Xt = torch.tensor(X.to_numpy())
    loss = cox_nll(Xt @ beta, torch.tensor(y["lenfol"].copy()), torch.tensor(y["fstat"].copy()), ties=ties,
                   reduction="sum")
    loss.backward()
    # Gradient scaled by feature spread: ~0 at the optimum, clearly not elsewhere.
    scaled = beta.grad.numpy() * X.std().to_numpy()
    assert np.abs(scaled).max() < 1e-4
    moved = torch.tensor(model.coef_ * 1.1, requires_grad=True)
    cox_nll(Xt @ moved, torch.tensor(y["lenfol"].copy()), torch.tensor(y["fstat"].copy()), ties=ties,
            reduction="sum").backward()
    assert np.abs(moved.grad.numpy() * X.std().to_numpy()).max() > 1e-2


@pytest.mark.parametrize("ties", ["efron", "breslow"])
@settings(max_examples=30, deadline=None)
@given(batch=survival_batches())
def test_log_space_path_equals_fast_path(ties, batch):
    """The cumulative-sum fast path and the log-space path give the same value and gradient."""
    import fracsurv.survival.loss as loss_mod

    eta, time, event = batch
    results = []
    for spread in (loss_mod._FAST_SPREAD, dict.fromkeys(loss_mod._FAST_SPREAD, 0.0)):
        orig = loss_mod._FAST_SPREAD
        loss_mod._FAST_SPREAD = spread
        try:
            x = torch.tensor(eta, requires_grad=True)
            val = cox_nll(x, torch.tensor(time), torch.tensor(event), ties=ties, reduction="sum")
            val.backward()
            results.append((val.item(), x.grad.clone()))
        finally:
            loss_mod._FAST_SPREAD = orig
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-9, abs=1e-9)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_wide_spread_matches_brute_force(ties):
    rng = np.random.default_rng(5)
    eta = rng.uniform(-300, 300, 60)
    time = rng.integers(1, 6, 60).astype(float)
    event = rng.integers(0, 2, 60)
    loss = cox_nll(torch.tensor(eta), torch.tensor(time), torch.tensor(event), ties=ties,
                   reduction="sum")
    assert loss.item() == pytest.approx(brute_force_nll(eta, time, event, ties), rel=1e-10)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_fit_ridge_cox_matches_scikit_survival(ties):
    """mean NLL + strength/2 ||w||^2 is sksurv's summed NLL + alpha/2 ||w||^2 with
    alpha = strength * (number of events): the same optimum on real data (WHAS500)."""
    from sksurv.datasets import load_whas500
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    from fracsurv.survival import fit_ridge_cox

    X, y = load_whas500()
    x = X[["age", "bmi", "hr", "diasbp", "sysbp"]].to_numpy(float)
    x = (x - x.mean(0)) / x.std(0)
    event, time = y["fstat"].astype(float), y["lenfol"].astype(float)
    strength = 0.1
    w = fit_ridge_cox(torch.tensor(x), torch.tensor(time), torch.tensor(event), strength=strength,
                      ties=ties)
    ref = CoxPHSurvivalAnalysis(alpha=strength * event.sum(), ties=ties).fit(x, y)
    np.testing.assert_allclose(w.numpy(), ref.coef_, atol=1e-5)
    assert w.dtype == torch.float64
    # the former l2 (penalty l2 ||w||^2) still works, with a FutureWarning
    with pytest.warns(FutureWarning, match="strength=2 \\* l2"):
        old = fit_ridge_cox(torch.tensor(x), torch.tensor(time), torch.tensor(event),
                            l2=strength / 2, ties=ties)
    np.testing.assert_array_equal(old.numpy(), w.numpy())
