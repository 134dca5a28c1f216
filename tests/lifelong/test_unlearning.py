"""Bounded unlearning: the loss and its bound, the Fisher diagonal, the forgetting penalty and the update loop."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lifelong.data import synthetic_sequences, synthetic_vectors
from lifelong.models.autoencoder import AutoencoderDetector
from lifelong.models.base import distinct_units, unit_keys
from lifelong.models.lstm import EOS, N_RESERVED, PAD, UNK, DeepLogDetector
from lifelong.unlearning import (
    FN_LABEL,
    FP_LABEL,
    ForgettingPenalty,
    UnlearnConfig,
    bounded_unlearning_loss,
    config_for,
    fisher_diagonal,
    unlearn,
)
from lifelong.unlearning.flat import FlatParameters

# torch.func has no batching rule for the CPU LSTM kernel and says so on every Fisher pass; it is only slower.
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

BND = 5.0


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tiny models: intra-op threads only add contention on a shared 2-core machine (20x slower measured).
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


# --- the bounded loss (Eq. 17) -------------------------------------------------------------------------
def _loss_and_grad(value: float, label: float, bound: float = BND) -> tuple[float, float]:
    L = torch.tensor([value], dtype=torch.float64, requires_grad=True)
    out = bounded_unlearning_loss(L, torch.tensor([label], dtype=torch.float64), bound)
    out.backward()
    return float(out.detach()), float(L.grad[0])


@pytest.mark.parametrize("value", [BND, BND + 1e-9, BND + 0.5, 3 * BND, 1e6])
def test_fn_term_is_zero_with_no_gradient_past_the_bound(value: float) -> None:
    assert (FN_LABEL, FP_LABEL) == (1.0, -1.0)
    loss, grad = _loss_and_grad(value, FN_LABEL)
    assert loss == 0.0 and grad == 0.0


@pytest.mark.parametrize("value", [0.0, 1.0, BND - 1e-6])
def test_fn_term_below_the_bound_pushes_the_loss_up(value: float) -> None:
    loss, grad = _loss_and_grad(value, FN_LABEL)
    assert loss == pytest.approx(BND - value)
    assert grad == -1.0  # gradient descent raises L(x)


@pytest.mark.parametrize("value", [0.0, 0.3, BND, 40.0])
def test_fp_term_is_plain_relearning(value: float) -> None:
    loss, grad = _loss_and_grad(value, FP_LABEL)
    assert loss == pytest.approx(BND + value)
    assert grad == 1.0  # gradient descent lowers L(x), at any loss


def test_bounded_loss_sums_units_and_checks_shapes() -> None:
    losses = torch.tensor([1.0, 7.0, 2.0], requires_grad=True)
    labels = torch.tensor([FN_LABEL, FN_LABEL, FP_LABEL])
    out = bounded_unlearning_loss(losses, labels, BND)
    assert out.item() == pytest.approx((BND - 1.0) + 0.0 + (BND + 2.0))
    out.backward()
    assert losses.grad.tolist() == [-1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="differ in shape"):
        bounded_unlearning_loss(torch.zeros(3), torch.ones(2), BND)


# --- the Fisher diagonal on a two-parameter model ---------------------------------------------------------
class TwoWeights(nn.Module):
    """y = w1 * x1 + w2 * x2."""

    def __init__(self, w1: float, w2: float) -> None:
        super().__init__()
        # float64 before the weights are set, so the hand calculation sees exactly w1 and w2.
        self.lin = nn.Linear(2, 1, bias=False).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[w1, w2]], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)[:, 0]  # (B,)


def _squared_error_factory(model: nn.Module):
    def unit_losses(units: tuple[torch.Tensor, ...], forward=None) -> torch.Tensor:
        x, t = units
        return ((forward or model)(x) - t) ** 2  # (U,)

    return unit_losses


def _hand_fisher(w: np.ndarray, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    # L = (w.x - t)^2  =>  dL/dw_j = 2 (w.x - t) x_j ; Fisher = mean over units of its square.
    residual = x @ w - t  # (U,)
    grads = 2.0 * residual[:, None] * x  # (U, 2)
    return (grads**2).mean(axis=0)


@pytest.mark.parametrize("chunk", [1, 2, 128])
def test_fisher_matches_a_hand_calculation(chunk: int) -> None:
    w = np.array([0.7, -1.3])
    x = np.array([[1.0, 2.0], [-0.5, 0.25], [3.0, -1.0], [0.0, 4.0], [2.0, 2.0]])
    t = np.array([1.0, 0.0, -2.0, 0.5, 3.0])
    model = TwoWeights(*w)
    units = (torch.as_tensor(x), torch.as_tensor(t))
    fisher = fisher_diagonal(model, _squared_error_factory(model), units, chunk=chunk)
    assert set(fisher) == {"lin.weight"}
    np.testing.assert_allclose(fisher["lin.weight"][0].numpy(), _hand_fisher(w, x, t), rtol=1e-12)


def test_fisher_is_exactly_zero_where_no_unit_has_a_gradient() -> None:
    model = TwoWeights(0.5, 2.0)
    x = np.array([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])  # x2 is never used: dL/dw2 = 0 for every unit
    t = np.array([0.0, 1.0, 1.0])
    fisher = fisher_diagonal(model, _squared_error_factory(model), (torch.as_tensor(x), torch.as_tensor(t)))
    f = fisher["lin.weight"][0]
    assert f[1].item() == 0.0
    assert f[0].item() == pytest.approx(_hand_fisher(np.array([0.5, 2.0]), x, t)[0])


def test_fisher_of_an_empty_memory_is_zero_and_mode_is_restored() -> None:
    model = TwoWeights(1.0, 1.0)
    model.train()
    empty = (torch.zeros((0, 2), dtype=torch.float64), torch.zeros(0, dtype=torch.float64))
    fisher = fisher_diagonal(model, _squared_error_factory(model), empty)
    assert fisher["lin.weight"].abs().sum().item() == 0.0
    assert model.training
    units = (torch.ones((2, 2), dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    fisher_diagonal(model, _squared_error_factory(model), units)
    assert model.training
    model.eval()
    fisher_diagonal(model, _squared_error_factory(model), units)
    assert not model.training


# --- the forgetting penalty ------------------------------------------------------------------------------
def test_penalty_is_zero_unchanged_positive_perturbed_and_differentiable() -> None:
    model = TwoWeights(0.7, -1.3)
    weights = {"lin.weight": torch.tensor([[2.0, 0.5]], dtype=torch.float64)}
    pen = ForgettingPenalty(model, lam=3.0, mode="fisher", fisher=weights)
    assert pen.penalty(model).item() == 0.0
    with torch.no_grad():
        model.lin.weight.add_(torch.tensor([[0.1, -0.2]], dtype=torch.float64))
    value = pen.penalty(model)
    # (lam / 2) * sum w * delta^2 = 1.5 * (2 * 0.01 + 0.5 * 0.04)
    assert value.item() == pytest.approx(1.5 * (2.0 * 0.01 + 0.5 * 0.04))
    value.backward()
    # d/dtheta = lam * w * delta
    np.testing.assert_allclose(model.lin.weight.grad.numpy(), [[3.0 * 2.0 * 0.1, 3.0 * 0.5 * -0.2]], rtol=1e-12)
    # The closed-form path the unlearning loop takes: the same value, the same gradient added to .grad.
    flat = FlatParameters(model)
    assert pen.value(flat, add_gradient=True) == pytest.approx(value.item(), rel=1e-12)
    np.testing.assert_allclose(model.lin.weight.grad.numpy(), [[3.0 * 2.0 * 0.1, 3.0 * 0.5 * -0.2]], rtol=1e-12)
    pen.value(flat, add_gradient=True)  # accumulates onto an existing gradient, like backward()
    np.testing.assert_allclose(flat.param.grad.numpy(), [2 * 3.0 * 2.0 * 0.1, 2 * 3.0 * 0.5 * -0.2], rtol=1e-12)
    flat.release()
    # the anchor is a copy: moving the model does not move it
    assert pen.anchor["lin.weight"][0].tolist() == [0.7, -1.3]


def test_l2_mode_weights_everything_by_one_and_none_mode_is_zero() -> None:
    model = TwoWeights(0.0, 0.0)
    l2 = ForgettingPenalty(model, lam=4.0, mode="l2")
    none = ForgettingPenalty(model, lam=4.0, mode="none")
    assert l2.weights["lin.weight"].tolist() == [[1.0, 1.0]]
    with torch.no_grad():
        model.lin.weight.copy_(torch.tensor([[1.0, -2.0]], dtype=torch.float64))
    assert l2.penalty(model).item() == pytest.approx(0.5 * 4.0 * (1.0 + 4.0))
    flat = FlatParameters(model)
    assert l2.value(flat) == pytest.approx(0.5 * 4.0 * (1.0 + 4.0))
    assert none.penalty(model).item() == 0.0 and none.value(flat, add_gradient=True) == 0.0
    assert flat.param.grad.abs().sum().item() == 0.0  # value() without add_gradient leaves .grad alone


def test_flat_parameters_train_like_the_module_and_release_own_storage(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    model = copy.deepcopy(ref)
    flat = FlatParameters(model)
    assert flat.param.numel() == sum(p.numel() for p in ref.parameters()) == 21
    x = torch.randn(8, 3)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.1)
    opt = torch.optim.Adam([flat.param], lr=0.1)
    for _ in range(3):  # the same steps through the flat buffer as through the per-tensor parameters
        ref_opt.zero_grad()
        ref(x).pow(2).mean().backward()
        ref_opt.step()
        flat.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    for a, b in zip(ref.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    flat.zero_grad()
    assert all(p.grad.abs().sum() == 0 for p in model.parameters())
    # A weight missing from a mapping is filled, or named.
    assert flat.flatten({"0.weight": torch.ones(4, 3)}, missing=0.0).sum().item() == 12.0
    with pytest.raises(KeyError, match="0.bias"):
        flat.flatten({"0.weight": torch.ones(4, 3)})
    flat.release()
    buffer = flat.param.data.untyped_storage().data_ptr()
    assert all(p.grad is None and p.untyped_storage().data_ptr() != buffer for p in model.parameters())
    save_file({n: p.detach() for n, p in model.named_parameters()}, tmp_path / "w.safetensors")  # no shared memory
    with pytest.raises(ValueError, match="mixed dtype"):
        FlatParameters(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).double()))
    assert ForgettingPenalty(model, lam=0.0, mode="l2").penalty(model).item() == 0.0


def test_penalty_skips_parameters_without_weights() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)).double()
    fisher = {"0.weight": torch.ones(2, 2, dtype=torch.float64)}
    pen = ForgettingPenalty(model, lam=2.0, mode="fisher", fisher=fisher)
    assert set(pen.weights) == {"0.weight"}
    with torch.no_grad():
        model[1].weight.add_(10.0)  # unweighted: no penalty
        model[1].bias.add_(10.0)
    assert pen.penalty(model).item() == 0.0
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert pen.penalty(model).item() == pytest.approx(0.5 * 2.0 * 4.0)


def test_penalty_rejects_invalid_options() -> None:
    model = TwoWeights(0.0, 0.0)
    with pytest.raises(ValueError, match="lambda"):
        ForgettingPenalty(model, lam=-1.0, mode="l2")
    with pytest.raises(ValueError, match="mode"):
        ForgettingPenalty(model, lam=1.0, mode="ewc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Fisher"):
        ForgettingPenalty(model, lam=1.0, mode="fisher")


# --- detectors and labelled mistakes ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def seq_data():
    return synthetic_sequences(seed=0, n_train=300, n_test=300)


@pytest.fixture(scope="module")
def lstm(seq_data) -> DeepLogDetector:
    # Tp = 1e-3 so the late drift sessions (new normal behaviour) are flagged: real false positives.
    det = DeepLogDetector(seed=0, epochs=20, hidden=32, embed_dim=16, layers=1, lr=1e-2, tp=1e-3)
    return det.fit(seq_data.train, validation=seq_data.validation)


@pytest.fixture(scope="module")
def lstm_mistakes(lstm, seq_data) -> dict[str, list[int]]:
    decided = lstm.decide(seq_data.stream)
    scores = lstm.sample_scores(seq_data.stream)
    labels = seq_data.stream_labels
    fp = np.flatnonzero(decided & ~labels)
    fn = np.flatnonzero(~decided & labels)
    assert len(fp) and len(fn), "the fixture model must make both kinds of mistake"
    order = fn[np.argsort(-scores[fn])]  # the missed anomaly closest to the threshold first
    hardest = fn[np.argmin(scores[fn])]
    return {"fp": fp.tolist(), "fn_close": [int(order[0])], "fn_hard": [int(hardest)]}


@pytest.fixture(scope="module")
def vec_data():
    return synthetic_vectors(seed=0, n_train=300, n_test=400)


@pytest.fixture(scope="module")
def ae(vec_data) -> AutoencoderDetector:
    return AutoencoderDetector(epochs=100, seed=0).fit(vec_data.train, validation=vec_data.validation)


def _state(det) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in det.module_.state_dict().items()}


def _assert_state_equal(det, state: dict[str, torch.Tensor]) -> None:
    now = det.module_.state_dict()
    assert set(now) == set(state)
    for k, v in state.items():
        assert torch.equal(now[k], v), k


def test_fisher_of_deeplog_is_zero_for_embedding_rows_never_in_memory(lstm, seq_data) -> None:
    memory_sessions = [s for s in seq_data.validation[:6]]
    units, _ = lstm.units(memory_sessions)
    fisher = fisher_diagonal(lstm.module_, lstm.unit_losses, units)
    emb = fisher["embed.weight"]  # (V, E)
    assert emb.shape == (lstm.n_classes_, lstm.config.embed_dim)
    in_history = set(np.unique(units[0].numpy()).tolist())
    unused = [i for i in range(lstm.n_classes_) if i not in in_history]
    # EOS is only ever a target and UNK does not occur: their rows, and those of keys absent from the memory
    # set, receive no gradient at all.
    assert {EOS, UNK} <= set(unused)
    assert any(i >= N_RESERVED for i in unused), "pick memory sessions that leave some keys out"
    assert emb[unused].abs().sum().item() == 0.0
    assert emb[PAD].abs().sum().item() == 0.0  # padding_idx: never trained
    used = sorted(in_history - {PAD})
    assert (emb[used].sum(dim=1) > 0).all()
    # every parameter gets a non-negative weight of its own shape
    for name, p in lstm.module_.named_parameters():
        assert fisher[name].shape == p.shape and (fisher[name] >= 0).all()
    # the head row of an unused key still gets a weight: softmax couples every logit
    assert fisher["head.weight"][unused[-1]].abs().sum().item() > 0


def test_fp_relearning_lowers_its_loss_and_leaves_the_original_alone(lstm, lstm_mistakes, seq_data) -> None:
    fp = [seq_data.stream[lstm_mistakes["fp"][0]]]
    probe = seq_data.stream[:60] + fp
    before_scores = lstm.sample_scores(probe)
    before_state = _state(lstm)
    assert lstm.decide(fp).tolist() == [True]
    res = unlearn(
        lstm,
        false_positives=fp,
        validation=seq_data.validation,
        config=UnlearnConfig(lr=1e-2, lam=5e3, regularizer="fisher", max_steps=100, seed=0),
    )
    assert res.updated and res.converged, res.reason
    assert res.detector is not lstm
    assert res.n_fp == 1 and res.n_fn == 0 and res.steps >= 1
    assert res.bound == pytest.approx(2.0 * lstm.loss_threshold)
    cand = res.detector
    assert cand.sample_scores(fp)[0] < before_scores[-1]
    assert cand.sample_scores(fp)[0] <= cand.loss_threshold
    assert cand.decide(fp).tolist() == [False]
    # the serving model is untouched
    np.testing.assert_array_equal(lstm.sample_scores(probe), before_scores)
    _assert_state_equal(lstm, before_state)
    summary = res.summary()
    assert summary["updated"] is True and summary["steps"] == res.steps
    assert summary["final_loss"] == res.loss_history[-1] and len(res.loss_history) == res.steps


def test_fn_unlearning_reaches_the_bound_within_a_few_dozen_steps(lstm, lstm_mistakes, seq_data) -> None:
    fn = [seq_data.stream[lstm_mistakes["fn_close"][0]]]
    before_state = _state(lstm)
    assert lstm.decide(fn).tolist() == [False]
    # Without the penalty the bound is reached in 17 steps (measured); with it, in 55.
    for regularizer, max_steps in (("none", 40), ("fisher", 150)):
        res = unlearn(
            lstm,
            false_negatives=fn,
            validation=seq_data.validation,
            config=UnlearnConfig(lr=1e-2, lam=5e3, regularizer=regularizer, max_steps=max_steps, seed=0),
        )
        assert res.updated and res.converged, (regularizer, res.reason)
        assert res.steps <= max_steps
        score = res.detector.sample_scores(fn)[0]
        assert score >= res.bound == pytest.approx(2.0 * lstm.loss_threshold)
        assert res.detector.decide(fn).tolist() == [True]
        # The bound stops the push: the FN is not driven arbitrarily far past BND.
        assert score < res.bound + lstm.loss_threshold
    _assert_state_equal(lstm, before_state)


def test_non_finite_parameters_return_the_original(lstm, lstm_mistakes, seq_data) -> None:
    fp = [seq_data.stream[lstm_mistakes["fp"][0]]]
    before_state = _state(lstm)
    res = unlearn(
        lstm,
        false_positives=fp,
        validation=seq_data.validation,
        config=UnlearnConfig(lr=math.inf, regularizer="none", max_steps=10),
    )
    assert not res.updated and not res.converged
    assert "non-finite" in res.reason
    assert res.detector is lstm
    _assert_state_equal(lstm, before_state)
    assert lstm.parameters_finite()


def test_non_finite_loss_returns_the_original(ae, vec_data) -> None:
    decided = ae.decide(vec_data.stream)
    fp = vec_data.stream.iloc[np.flatnonzero(decided & ~vec_data.stream_labels)[:1]]
    before_state = _state(ae)
    before_scores = ae.sample_scores(vec_data.stream)
    res = unlearn(ae, false_positives=fp, config=UnlearnConfig(lr=1e6, regularizer="none", max_steps=50))
    assert not res.updated
    assert "non-finite" in res.reason
    assert res.detector is ae
    _assert_state_equal(ae, before_state)
    np.testing.assert_array_equal(ae.sample_scores(vec_data.stream), before_scores)


def test_step_budget_returns_the_original(lstm, lstm_mistakes, seq_data) -> None:
    fn = [seq_data.stream[lstm_mistakes["fn_hard"][0]]]
    assert lstm.sample_scores(fn)[0] < lstm.loss_threshold / 2  # far from BND: one step cannot get there
    before_state = _state(lstm)
    res = unlearn(lstm, false_negatives=fn, config=UnlearnConfig(lr=1e-3, regularizer="none", max_steps=1))
    assert not res.updated and not res.converged
    assert "budget" in res.reason and "1 steps" in res.reason
    assert res.steps == 1 and len(res.loss_history) == 1
    assert res.detector is lstm
    _assert_state_equal(lstm, before_state)


def test_time_budget_returns_the_original(lstm, lstm_mistakes, seq_data) -> None:
    fn = [seq_data.stream[lstm_mistakes["fn_hard"][0]]]
    res = unlearn(lstm, false_negatives=fn, config=UnlearnConfig(lr=1e-3, max_seconds=1e-9, max_steps=1000))
    assert not res.updated and "budget" in res.reason and " s " in res.reason
    assert res.detector is lstm
    assert res.steps < 1000


def test_nothing_to_unlearn_and_no_threshold(lstm, vec_data) -> None:
    res = unlearn(lstm, config=UnlearnConfig())
    assert not res.updated and res.converged and res.reason == "nothing to unlearn" and res.detector is lstm
    untuned = AutoencoderDetector(epochs=1, seed=0, tau=None)
    untuned.fit(vec_data.train.iloc[:20])
    untuned.tau_ = math.inf  # a model without a threshold cannot bound anything
    res = unlearn(untuned, false_positives=vec_data.stream.iloc[:1])
    assert not res.updated and "threshold" in res.reason and res.detector is untuned


def test_budget_defers_samples_beyond_max_samples(lstm, lstm_mistakes, seq_data) -> None:
    fps = [seq_data.stream[i] for i in lstm_mistakes["fp"][:3]]
    res = unlearn(
        lstm,
        false_positives=fps,
        validation=seq_data.validation,
        config=UnlearnConfig(lr=1e-2, max_samples=2, max_steps=100),
    )
    assert res.n_fp == 2 and res.deferred == 1
    assert res.summary()["deferred"] == 1


def test_autoencoder_fp_and_fn_updates(ae, vec_data) -> None:
    decided = ae.decide(vec_data.stream)
    labels = vec_data.stream_labels
    fp = vec_data.stream.iloc[np.flatnonzero(decided & ~labels)[:1]]
    fn = vec_data.stream.iloc[np.flatnonzero(~decided & labels)[:1]]
    before = ae.sample_scores(vec_data.stream)
    cfg = UnlearnConfig(lr=1e-2, lam=5e3, regularizer="fisher", max_steps=100, seed=0)
    res_fp = unlearn(ae, false_positives=fp, validation=vec_data.validation, config=cfg)
    assert res_fp.updated, res_fp.reason
    assert res_fp.detector.sample_scores(fp)[0] < ae.sample_scores(fp)[0]
    assert res_fp.detector.decide(fp).tolist() == [False]
    res_fn = unlearn(ae, false_negatives=fn, validation=vec_data.validation, config=cfg)
    assert res_fn.updated, res_fn.reason
    assert res_fn.bound == pytest.approx(2.0 * ae.loss_threshold)
    assert res_fn.detector.sample_scores(fn)[0] >= res_fn.bound
    np.testing.assert_array_equal(ae.sample_scores(vec_data.stream), before)


def test_each_detector_kind_gets_its_measured_defaults_and_explicit_options_win(ae, lstm, vec_data) -> None:
    cfg = config_for(lstm)
    assert (cfg.guard_units, cfg.guard_weight, cfg.guard_strict, cfg.fn_skip_normal_units) == (256, 30.0, True, True)
    assert (cfg.optimizer, cfg.lr, cfg.bnd_factor, cfg.max_steps) == ("sgd", 1e-2, 2.0, 300)
    cfg = config_for(ae)
    assert (cfg.bnd_factor, cfg.fp_margin, cfg.guard_units, cfg.guard_weight) == (1.2, 0.5, 512, 100.0)
    assert (cfg.rehearse_units, cfg.optimizer, cfg.lr, cfg.max_steps) == (256, "adam", 3e-4, 2000)
    assert config_for(ae, bnd_factor=2.0, lam=7.0).bnd_factor == 2.0
    assert config_for(ae, lam=7.0).lam == 7.0
    # Without a config, an update uses its detector's defaults: an autoencoder's FN bound is 1.2 * tau.
    fn = vec_data.stream.iloc[np.flatnonzero(~ae.decide(vec_data.stream) & vec_data.stream_labels)[:1]]
    res = unlearn(ae, false_negatives=fn, validation=vec_data.validation)
    assert res.bound == pytest.approx(1.2 * ae.loss_threshold)


def test_no_harm_guard_keeps_held_out_normals_from_getting_worse(ae, vec_data) -> None:
    # Push a missed anomaly past the threshold with no forgetting penalty: the held-out normals'
    # reconstruction errors rise; the guard (all of them guarded) holds them down (measured: 8x less).
    fn = vec_data.stream.iloc[np.flatnonzero(~ae.decide(vec_data.stream) & vec_data.stream_labels)[:1]]
    assert len(fn) == 1
    before = ae.sample_scores(vec_data.validation)
    rise = {}
    n_val = len(vec_data.validation)
    for units, floor in ((0, 0.0), (n_val, 0.0), (n_val, 1.0)):
        cfg = UnlearnConfig(
            bnd_factor=2.0, regularizer="none", guard_units=units, guard_weight=10.0, guard_floor=floor, seed=0
        )
        res = unlearn(ae, false_negatives=fn, validation=vec_data.validation, config=cfg)
        assert res.updated, res.reason
        assert (res.detector.sample_scores(fn) >= res.bound).all()
        rise[units, floor] = float(np.mean(np.maximum(res.detector.sample_scores(vec_data.validation) - before, 0)))
    assert rise[0, 0.0] > 0
    assert rise[n_val, 0.0] < 0.3 * rise[0, 0.0], rise
    # guard_floor=1: a guarded row is free to rise up to tau', so the guard holds far less.
    assert rise[n_val, 1.0] > 2 * rise[n_val, 0.0], rise


def test_unlearn_config_validation() -> None:
    with pytest.raises(ValueError, match="bnd_factor"):
        UnlearnConfig(bnd_factor=0)
    with pytest.raises(ValueError, match="fn_units"):
        UnlearnConfig(fn_units="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="optimizer"):
        UnlearnConfig(optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_steps"):
        UnlearnConfig(max_steps=0)
    with pytest.raises(ValueError, match="guard"):
        UnlearnConfig(guard_units=-1)
    with pytest.raises(ValueError, match="guard_floor"):
        UnlearnConfig(guard_floor=-0.5)


def test_rehearsal_keeps_a_past_correction_that_the_next_update_would_undo(ae, vec_data) -> None:
    # Relearn one missed anomaly (FN); then an analyst reports a normal row close to it (half a standard deviation
    # off on every feature) as a false positive. Relearning that FP alone drags the FN back under tau'; rehearsing
    # the past FN (a soft constraint) keeps it flagged, and the update still converges.
    missed = np.flatnonzero(~ae.decide(vec_data.stream) & vec_data.stream_labels)
    fn = vec_data.stream.iloc[missed[:1]]
    first = unlearn(ae, false_negatives=fn, validation=vec_data.validation, config=UnlearnConfig(seed=0))
    assert first.updated, first.reason
    fixed = first.detector
    cols = vec_data.stream.select_dtypes("number").columns
    fp = fn.copy()
    fp[cols] += 0.5 * vec_data.train[cols].std().to_numpy() * np.where(np.arange(len(cols)) % 2, 1.0, -1.0)
    assert fixed.decide(fp)[0], "the nearby normal row must be flagged for this test to mean anything"
    tau = ae.loss_threshold
    after = {}
    for units in (0, 64):
        cfg = UnlearnConfig(fp_margin=0.5, rehearse_units=units, rehearse_weight=100.0, max_steps=300, seed=0)
        res = unlearn(fixed, false_positives=fp, past_false_negatives=fn, validation=vec_data.validation, config=cfg)
        assert res.updated, res.reason
        assert not res.detector.decide(fp)[0]
        after[units] = float(res.detector.sample_scores(fn)[0]) / tau
    # Measured: 0.48 tau' without rehearsal, 1.10 tau' with it.
    assert after[0] < 0.9 and after[64] >= 0.999, after


def test_heldout_harm_check_rejects_an_update_that_flags_held_out_normals(ae, vec_data) -> None:
    # Push a missed anomaly far (BND = 50 tau', no penalty, no guard): it drags held-out normals over the
    # threshold; with the check at 0% the update is rejected and the serving model comes back unchanged.
    fn = vec_data.stream.iloc[np.flatnonzero(~ae.decide(vec_data.stream) & vec_data.stream_labels)[:1]]
    cfg = dict(bnd_factor=50.0, regularizer="none", lr=5e-2, max_steps=300, seed=0)
    free = unlearn(ae, false_negatives=fn, validation=vec_data.validation, config=UnlearnConfig(**cfg))
    assert free.updated, free.reason
    newly = int(free.detector.decide(vec_data.validation).sum() - ae.decide(vec_data.validation).sum())
    assert newly > 0, "the push should harm some held-out normals for this test to mean anything"
    checked = unlearn(
        ae, false_negatives=fn, validation=vec_data.validation, config=UnlearnConfig(**cfg, max_heldout_harm=0.0)
    )
    assert not checked.updated and checked.converged
    assert checked.detector is ae
    assert "held-out normals" in checked.reason
    loose = unlearn(
        ae, false_negatives=fn, validation=vec_data.validation, config=UnlearnConfig(**cfg, max_heldout_harm=1.0)
    )
    assert loose.updated, loose.reason


def test_rehearsal_and_harm_options_are_validated() -> None:
    with pytest.raises(ValueError, match="rehearse"):
        UnlearnConfig(rehearse_units=-1)
    with pytest.raises(ValueError, match="max_heldout_harm"):
        UnlearnConfig(max_heldout_harm=1.5)


def test_unit_keys_tell_identical_units_apart_from_different_ones() -> None:
    x = torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 4]])
    y = torch.tensor([5, 5, 5])
    keys = unit_keys((x, y))
    assert keys[0] == keys[1] != keys[2]
    assert unit_keys((x, torch.tensor([5, 6, 5])))[0] != unit_keys((x, torch.tensor([5, 6, 5])))[1]
    kept = distinct_units((x, y))
    assert kept[0].tolist() == [[1, 2, 3], [1, 2, 4]] and kept[1].tolist() == [5, 5]
    rows = (torch.tensor([[0.5, 1.0], [0.5, 1.0]]),)
    assert distinct_units(rows)[0].shape == (1, 2)


def test_a_missed_anomaly_identical_to_normal_data_is_skipped_not_pushed(lstm, lstm_mistakes, seq_data) -> None:
    # A "missed anomaly" whose every window also occurs in held-out normal data: a window model cannot flag it
    # without flagging that data, so it is skipped (and counted); a real missed anomaly beside it is still fixed.
    real = seq_data.stream[lstm_mistakes["fn_close"][0]]
    copy_of_normal = list(seq_data.validation[0])
    cfg = UnlearnConfig(max_steps=300, seed=0)
    only = unlearn(lstm, false_negatives=[copy_of_normal], validation=seq_data.validation, config=cfg)
    assert not only.updated and only.converged and only.detector is lstm
    assert only.indistinguishable == 1 and "known-normal data" in only.reason
    assert only.summary()["indistinguishable"] == 1 and only.skipped
    both = unlearn(lstm, false_negatives=[real, copy_of_normal], validation=seq_data.validation, config=cfg)
    assert both.updated, both.reason
    assert both.indistinguishable == 1 and "1 missed anomal(ies) skipped" in both.reason
    assert both.detector.decide([real]).tolist() == [True] and not both.skipped
    # Also when the identical sample is a confirmed false positive of the same update (no held-out data).
    fp_too = unlearn(lstm, false_positives=[copy_of_normal], false_negatives=[copy_of_normal], config=cfg)
    assert fp_too.indistinguishable == 1
    # The rule can be switched off: the copy is then pushed like any missed anomaly.
    off = unlearn(
        lstm,
        false_negatives=[copy_of_normal],
        validation=seq_data.validation,
        config=UnlearnConfig(max_steps=300, seed=0, fn_skip_normal_units=False),
    )
    assert off.indistinguishable == 0 and off.updated, off.reason


def test_a_strict_guard_keeps_every_held_out_normal_normal(ae, vec_data) -> None:
    # A missed anomaly pushed hard (no penalty, large steps) with only 8 guarded units: the soft guard alone
    # lets 30+ held-out normals be flagged (measured 43); the strict guard checks all held-out units before
    # it accepts, guards the ones it harmed, and goes on until none is newly abnormal.
    fn = vec_data.stream.iloc[np.flatnonzero(~ae.decide(vec_data.stream) & vec_data.stream_labels)[:1]]
    was = int(ae.decide(vec_data.validation).sum())
    newly = {}
    for strict in (False, True):
        cfg = UnlearnConfig(
            bnd_factor=3.0, regularizer="none", lr=5e-2, guard_units=8, guard_weight=10.0, guard_strict=strict
        )
        res = unlearn(ae, false_negatives=fn, validation=vec_data.validation, config=replace(cfg, seed=0))
        assert res.updated, res.reason
        assert res.detector.decide(fn).tolist() == [True]
        newly[strict] = int(res.detector.decide(vec_data.validation).sum()) - was
    assert newly[False] >= 10, newly
    assert newly[True] == 0, newly
