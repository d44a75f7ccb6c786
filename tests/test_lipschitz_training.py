"""The layer bounds in the loss (§4.3's suggestion) and LMT: `advjax.norms.regulariser`
and `experiments.lipschitz_training`."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import data, models, train
from advjax.norms import conv_geometry, layers, regulariser
from experiments import common
from experiments import lipschitz_training as script
from experiments.configs import lipschitz_training as config

HOOK = regulariser.stepping_hook()


def _dense_op(W):
  return regulariser.Operator("fc", "dense", (W.shape[0],), W.shape, 1, "SAME", 1.0)


@pytest.mark.slow
def test_power_iteration_converges_to_svd_dense_and_conv():
  W = np.random.default_rng(0).normal(size=(12, 7)).astype(np.float32)
  op = _dense_op(W)
  sig, _ = regulariser.update((op,), {"fc": {"kernel": W}}, regulariser.init((op,)), 200)
  assert float(sig[0]) == pytest.approx(np.linalg.svd(W, compute_uv=False)[0], rel=1e-4)
  K = np.random.default_rng(1).normal(size=(3, 3, 2, 3)).astype(np.float32)
  conv = regulariser.Operator("c", "conv", (6, 5, 2), K.shape, 2, "SAME", 1.0)
  f = conv_geometry.conv_fn(K, 2, "SAME", input_hw=(6, 5))
  dense = np.asarray(jax.jacfwd(lambda v: f(v).ravel())(jnp.zeros((6, 5, 2)))).reshape(-1, 60)
  sig, _ = regulariser.update((conv,), {"c": {"kernel": K}}, regulariser.init((conv,)), 300)
  assert float(sig[0]) == pytest.approx(np.linalg.svd(dense, compute_uv=False)[0], rel=1e-3)


def test_lmt_kernel_matrix_bound_is_sqrt_n_times_the_matrix_norm():
  """LMT's conv bound: √n·‖W (kh·kw·c_in, c_out)‖₂, n the most windows an input
  element lies in; never below the conv's operator norm (its dense matrix)."""
  rng = np.random.default_rng(3)
  for shape, stride, pad, n in (((4, 4, 1, 3), 2, ((1, 1), (1, 1)), 4),  # wong-small's
                                ((3, 3, 2, 3), 1, "SAME", 9), ((1, 1, 2, 3), 1, "VALID", 1),
                                ((3, 3, 2, 2), 1, "VALID", 1)):  # a 3×3 input: one window
    K = rng.normal(size=shape).astype(np.float32)
    hw = (3, 3) if n == 1 and shape[0] == 3 else (8, 8)
    conv = regulariser.Operator("c", "conv", hw + (shape[2],), K.shape, stride, pad, 0.5)
    op = regulariser.kernel_matrix_bound(conv)
    mat = np.linalg.svd(K.reshape(-1, shape[-1]), compute_uv=False)[0]
    assert op.kind == "matrix" and op.factor == pytest.approx(0.5 * math.sqrt(n))
    sig, _ = regulariser.update((op,), {"c": {"kernel": K}}, regulariser.init((op,)), 200)
    assert float(sig[0]) == pytest.approx(mat, rel=1e-4)
    f = conv_geometry.conv_fn(K, stride, pad, input_hw=hw)
    dense = np.asarray(jax.jacfwd(lambda v, f=f: f(v).ravel())(
        jnp.zeros(hw + (shape[2],)))).reshape(-1, int(np.prod(hw)) * shape[2])
    exact = np.linalg.svd(dense, compute_uv=False)[0]
    assert math.sqrt(n) * mat >= exact * (1 - 1e-5)
  dense_op = _dense_op(np.ones((3, 2), np.float32))
  assert regulariser.kernel_matrix_bound(dense_op) == dense_op


def test_persistent_vectors_track_sigma_with_one_iteration_per_step():
  rng = np.random.default_rng(2)
  W = rng.normal(size=(30, 20)).astype(np.float32)
  D = rng.normal(size=(30, 20)).astype(np.float32)
  op = _dense_op(W)
  state = regulariser.init((op,))
  step = jax.jit(lambda p, s: regulariser.update((op,), p, s, 1))
  errs = []
  for t in range(150):  # weights drift slowly; the vectors follow
    Wt = W + 0.002 * t * D
    sig, state = step({"fc": {"kernel": Wt}}, state)
    errs.append(abs(float(sig[0]) / np.linalg.svd(Wt, compute_uv=False)[0] - 1))
  assert errs[0] > 1e-2 and max(errs[-50:]) < 1e-3 and int(state.count) == 150


@pytest.mark.slow
def test_penalties_have_finite_gradients_that_reduce_sigma():
  W = np.random.default_rng(3).normal(size=(10, 6)).astype(np.float32)
  op = _dense_op(W)._replace(factor=0.25)
  state = regulariser.update((op,), {"fc": {"kernel": W}}, regulariser.init((op,)), 100)[1]
  for pen in ("sum", "log"):
    cfg = regulariser.RegConfig(penalty=pen, strength=1.0)
    f = lambda w: regulariser.penalty(cfg, regulariser.layer_bounds(
        (op,), regulariser.update((op,), {"fc": {"kernel": w}}, state, 1)[0]))
    g = jax.grad(f)(jnp.asarray(W))
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    s0 = np.linalg.svd(W, compute_uv=False)[0]
    s1 = np.linalg.svd(W - 0.1 * np.asarray(g), compute_uv=False)[0]
    assert s1 < s0
  assert float(f(W)) == pytest.approx(math.log(0.25 * s0), rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [regulariser.RegConfig("sum", 1.0),
                                 regulariser.RegConfig("log", 1.0),
                                 regulariser.RegConfig(lmt_eps=0.5)])
def test_objective_finite_at_zero_kernels(cfg):
  """A zero kernel (a pruned or freshly zeroed layer) gave NaN gradients (the
  norm's at 0), −∞ for 'log', and zero power vectors that never recovered."""
  model = models.get_model("FC10(1e-2)")
  ops = regulariser.operators(model)
  zero = jax.tree_util.tree_map(jnp.zeros_like, model.init(jax.random.PRNGKey(0)))
  x, y = jnp.ones((3, 28, 28, 1)), jnp.arange(3)
  f = lambda p: regulariser.objective(model, ops, cfg, p, regulariser.init(ops), x, y)
  (loss, state), g = jax.value_and_grad(f, has_aux=True)(zero)
  assert np.isfinite(float(loss))
  assert all(np.all(np.isfinite(v)) for v in jax.tree_util.tree_leaves(g))
  assert all(float(jnp.linalg.norm(v)) == pytest.approx(1.0, rel=1e-5)
             for v in state.v.values())  # the vectors stay unit: they recover


@pytest.mark.slow
def test_operators_match_table5_product():
  model = models.get_model("FC100-100-10")
  params = model.init(jax.random.PRNGKey(0))
  ops = regulariser.operators(model)
  assert [op.factor for op in ops] == [0.25, 0.25, 1.0]
  ref = layers.layer_bounds(model, params).product
  assert float(np.prod(regulariser.bounds_of(model, params, iters=300))) == pytest.approx(
      ref, rel=1e-3)
  conv = regulariser.operators(models.get_model("conv"))  # ReLU 1, 2×2/2 pools 1
  assert [(op.input_shape, op.factor) for op in conv] == [
      ((28, 28, 1), 1.0), ((14, 14, 32), 1.0), ((3136,), 1.0), ((128,), 1.0)]


def test_lmt_shift_is_sqrt2_L_eps():
  z = jnp.asarray([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
  y = jnp.asarray([2, 0])
  out = regulariser.lmt_logits(z, y, 3.0, 0.5)
  c = math.sqrt(2) * 3.0 * 0.5
  np.testing.assert_allclose(out - z, [[c, c, 0], [0, c, c]], rtol=1e-6)
  with pytest.raises(ValueError):
    regulariser.check(regulariser.RegConfig(penalty="max"))


def _tiny():
  rng = np.random.default_rng(0)
  x = rng.random((64, 28, 28, 1)).astype(np.float32)
  return data.Dataset(x, rng.integers(0, 10, 64).astype(np.int32))


@pytest.mark.parametrize("reg", [
    regulariser.RegConfig(penalty="sum", strength=1e-2, refresh_iters=5),
    pytest.param(regulariser.RegConfig(lmt_eps=0.5, iters=2, refresh_iters=5),
                 marks=pytest.mark.skipif(not HOOK, reason="needs train.ExtraLoss.step"))])
@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, reg):
  model, ds = models.get_model("FC100-100-10"), _tiny()
  cfg = train.TrainConfig(lr=1e-2, epochs=2, batch_size=16)
  ex = regulariser.extra_loss(model, reg)
  a = train.train(model, ds, cfg, ckpt_dir=str(tmp_path / "a"), extra=ex, progress=False)
  one = dataclasses.replace(cfg, epochs=1)
  train.train(model, ds, one, ckpt_dir=str(tmp_path / "b"), extra=ex, progress=False)
  b = train.train(model, ds, cfg, ckpt_dir=str(tmp_path / "b"), extra=ex, progress=False)
  for u, v in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
  # The whole saved state (params, optimiser, power-iteration vectors), byte for byte.
  blob = [(tmp_path / d / train.STATE).read_bytes() for d in "ab"]
  assert blob[0] == blob[1] and a.history == b.history


@pytest.mark.slow
def test_quick_experiment_runs_and_resumes(fake_mnist, tmp_path):
  cfg = dataclasses.replace(config.get_config(True), runs_dir=str(tmp_path / "runs"),
                            data_dir=str(fake_mnist), progress=False)
  # One cell with the bounds in the loss (LMT's runs `objective`: needs the stepping hook).
  cfg = dataclasses.replace(cfg, only=("LMT 1.58",) if HOOK else ("penalty 0.001",))
  out = common.execute(script.run, config, cfg, str(tmp_path / "res"), markdown=script.markdown)
  rows = out["rows"]
  assert len(rows) == len(cfg.selected([v.name for v in cfg.variants])) * len(cfg.seeds)
  for r in rows:
    assert 0 <= r["test_err"] <= 1 and r["bound_product"] >= r["empirical_lower"] > 0
    assert all(r[f"certified@{e}"] <= r[f"attacked@{e}"] for e in cfg.eps)
  assert (tmp_path / "res" / "figure.png").exists()
  again = script.run(cfg, str(tmp_path / "res2"))  # every cell read back
  assert again["rows"] == rows


def test_conv_cells_are_named_variants_at_their_seeds():
  cfg = dataclasses.replace(config.get_config(True), conv=("weight decay",), conv_seeds=(0, 3))
  conv = [(v.name, v.model, s) for v, s in script.cells(cfg) if v.model == "conv"]
  assert conv == [("conv weight decay", "conv", 0), ("conv weight decay", "conv", 3)]
  with pytest.raises(ValueError, match="not variants"):
    script.cells(dataclasses.replace(cfg, conv=("no such",)))
  full = config.get_config()  # the committed config certifies conv cells with the floor
  assert full.conv_certify.lipschitz_floor and set(full.conv) <= {v.name for v in full.variants}
