"""The holes probes found in `advjax.certify` (issue 27), each as the case that
broke it: constants read as part of the linear map (padding, fill values), a
Lipschitz cache keyed by identity, narrow floats certified as float32,
α-CROWN's NaN without the box. Each failed before its fix."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import certify, inputs, models
from advjax.attack import lbfgs
from advjax.certify import CertifyOptions, search

OPTS = CertifyOptions(alpha_steps=4)
GRID = np.stack(np.meshgrid(*[np.linspace(0, 1, 401, dtype=np.float32)] * 2), -1).reshape(-1, 2)


def _grid_distance(net, x):
  """Per example, the distance to the nearest grid point of [0, 1]² that the
  model (as it runs) gives another label by more than float32 noise."""
  z = np.asarray(jax.jit(net)(jnp.asarray(GRID)), np.float64)
  zx = np.asarray(net(jnp.asarray(x)), np.float64)
  out = []
  for i, l in enumerate(zx.argmax(1)):
    other = np.max(np.delete(z, l, 1), 1) - z[:, l]
    far = other > 1e-5 * (1 + np.abs(z).max(1))
    d = np.linalg.norm(GRID[far] - x[i], axis=1)
    out.append(d.min() if len(d) else np.inf)
  return np.array(out)


PADS = {  # each maps (x₁, x₂) to x₁, x₂ and constants −1 or the fill value
    "jnp.pad": lambda x: jnp.pad(x, ((0, 0), (1, 1)), constant_values=-1.0),
    "lax.pad interior": lambda x: jax.lax.pad(x, -1.0, ((0, 0, 0), (1, 1, 1))),
    "take fill": lambda x: jnp.take(x, jnp.array([0, 1, 5]), axis=1, mode="fill",
                                    fill_value=-1.0)}


def _padded(x):
  """logits (Σ relu(h(x) + 0.5) over the three maps h, 7.2): the constants are
  relu(−0.5) = 0, so the first logit is 3(x₁ + x₂) + 3 and the boundary is
  x₁ + x₂ = 1.4."""
  s = sum(jnp.sum(jax.nn.relu(h(x) + 0.5), -1) for h in PADS.values())
  return jnp.stack([s, jnp.full_like(s, 7.2)], -1)


@pytest.mark.slow
def test_padding_and_fill_values_are_constants():
  """The padding value was read as part of |A|: on relu(pad(x, −1) + 0.5)
  summed against a constant, at (0.3, 0.3), CROWN certified 0.990 (the whole
  box) where the exact distance is 0.8/√2 = 0.566; lax.pad's interior
  padding and take's fill value the same."""
  x = np.array([[0.3, 0.3], [0.1, 0.5], [0.6, 0.2]], np.float32)
  exact = (1.4 - x.sum(1)) / np.sqrt(2)
  grid = _grid_distance(_padded, x)
  np.testing.assert_allclose(grid, exact, atol=2e-3)
  for m in ("ibp", "crown", "alpha-crown"):
    r = np.asarray(certify.radius(_padded, x, method=m, options=OPTS).l2)
    assert np.all(r <= exact) and np.all(r <= grid), (m, r, exact)
    if m != "ibp":  # tight: the net is affine where it matters
      np.testing.assert_allclose(r, exact, rtol=1e-4)


class PadConv(nn.Module):
  """Images in [−1, 1] padded with −1 (the natural background), VALID conv."""

  @nn.compact
  def __call__(self, x):
    x = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    h = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(x))
    return nn.Dense(3)(h.reshape(h.shape[0], -1))


@pytest.mark.slow
def test_conv_net_padded_with_minus_one_stays_below_the_attack():
  """The probe's conv net: 7.4–8.2 certified where the attack found 1.1–2.0."""
  m = PadConv()
  p = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 6, 1)))
  x = np.random.RandomState(0).uniform(-1, 1, (3, 6, 6, 1)).astype(np.float32)
  res = lbfgs((m.apply, p), x, bounds=(-1.0, 1.0))
  adv = np.where(np.asarray(res.success), np.asarray(res.l2), np.inf)
  assert np.isfinite(adv).all()
  r = np.asarray(certify.radius((m.apply, p), x, bounds=(-1.0, 1.0), method="crown",
                                options=OPTS).l2)
  assert np.all(r > 0) and np.all(r <= adv), (r, adv)


@pytest.mark.slow
def test_lipschitz_constants_follow_parameters_changed_in_place():
  """numpy parameters scaled in place kept their old Lipschitz constants
  (cached by identity): radii 0.42 where the attack found 0.23."""
  from advjax import adapt  # pylint: disable=import-outside-toplevel
  m = models.get_model("FC20-20-10")
  params = jax.tree_util.tree_map(np.array, m.init(jax.random.PRNGKey(0)))
  w = adapt.wrap((m.apply, params), m.input_shape)
  x = np.random.RandomState(1).rand(3, *m.input_shape).astype(np.float32)
  lo, hi = np.zeros_like(x), np.ones_like(x)
  opts = OPTS._replace(method="ibp", lipschitz_floor=True)
  run = lambda p: certify.batch(w.apply, p, x, np.asarray(
      jnp.argmax(m.apply(p, jnp.asarray(x)), -1), np.int32), lo, hi, opts)
  before = run(w.params)  # caches the constants
  leaves = jax.tree_util.tree_leaves(w.params)
  assert all(isinstance(a, np.ndarray) for a in leaves)
  for a in leaves:
    a *= 4.0  # in place: the same arrays, new values
  after = run(w.params)
  fresh = run(jax.tree_util.tree_map(np.copy, w.params))
  np.testing.assert_array_equal(after.l2, fresh.l2)
  assert not np.array_equal(after.l2, before.l2)


class Lin(nn.Module):
  """A linear classifier of 28×28 images, computing in `dtype`."""
  dtype: object = jnp.bfloat16
  hidden: int = 0

  @nn.compact
  def __call__(self, x):
    h = x.reshape(x.shape[0], -1)
    if self.hidden:
      h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(h))
    return nn.Dense(10, dtype=self.dtype)(h).astype(jnp.float32)


def _first_flip(f, x, xa, label):
  """Distance from x to the first point on the segment to xa that f (as it
  runs) gives another label (2,001 points), per example."""
  s = np.linspace(0, 1, 2001, dtype=np.float32)
  fj, out = jax.jit(f), []
  for i in range(len(x)):
    pts = x[i] + s[:, None, None, None] * (xa[i] - x[i])
    bad = np.flatnonzero(np.asarray(fj(pts)).argmax(1) != label[i])
    out.append(np.linalg.norm((pts[bad[0]] - x[i]).ravel()) if len(bad) else np.inf)
  return np.array(out)


@pytest.mark.slow
def test_bfloat16_model_is_certified_as_it_runs():
  """A bf16 linear classifier was certified as its float32 twin: its points
  on the way to the attack's example flip inside the twin's exact radius (on
  10 of 12 examples here). Each rounding is now bounded; 'exact' refuses (the
  model is not affine as it runs); the attack accepts the model (its batch
  check reads bfloat16's resolution)."""
  bf, f32 = Lin(), Lin(jnp.float32)
  p = jax.tree_util.tree_map(lambda a: a * 3, f32.init(jax.random.PRNGKey(0),
                                                       jnp.zeros((1, 28, 28, 1))))
  x = np.random.RandomState(0).rand(12, 28, 28, 1).astype(np.float32)
  run16, run32 = (lambda v: bf.apply(p, v)), (lambda v: f32.apply(p, v))
  inputs.problem(run16, x)  # accepted: no "batch-dependent" refusal (the attack's check)
  label = np.asarray(run16(x)).argmax(1)
  res = lbfgs(run32, x)
  flips = _first_flip(run16, x, np.asarray(res.x_adv), label)
  twin = np.asarray(certify.radius(run32, x, method="exact").l2)
  assert np.sum(twin > flips) >= 3  # the hole: the float32 twin's radius is not sound
  with pytest.raises(ValueError, match="bfloat16"):
    certify.radius(run16, x, method="exact")
  r = np.asarray(certify.radius(run16, x, method="crown", options=OPTS).l2)
  assert np.all(r <= flips), (r, flips)
  assert np.mean(r) > 0.5 * np.mean(twin)  # the price of bf16, not a vacuous bound


@pytest.mark.slow
def test_bfloat16_relu_net_below_its_own_flips_every_method():
  bf = Lin(hidden=16)
  p = bf.init(jax.random.PRNGKey(1), jnp.zeros((1, 10, 10, 1)))
  x = np.random.RandomState(1).rand(4, 10, 10, 1).astype(np.float32)
  run = lambda v: bf.apply(p, v)
  res = lbfgs(run, x)  # the attack takes the bf16 model
  flips = _first_flip(run, x, np.asarray(res.x_adv), np.asarray(run(x)).argmax(1))
  for m in ("ibp", "alpha-crown"):  # α-CROWN starts from CROWN's bounds
    r = np.asarray(certify.radius(run, x, method=m, options=OPTS).l2)
    assert np.all(np.isfinite(r)) and np.all(r <= flips), (m, r, flips)
  with pytest.raises(ValueError, match="Lipschitz bounds assume the real network"):
    certify.radius(run, x, options=OPTS._replace(lipschitz_floor=True))


@pytest.mark.slow  # over 1.5 s on 2 cores (session 11)
def test_narrow_overflow_is_not_certified():
  """float16 overflows above 65504: a logit that may overflow inside the set
  certifies nothing there (no NaN, no radius past the overflow)."""
  W = jnp.asarray([[3e4, -3e4], [-3e4, 3e4]], jnp.float16)
  net = lambda x: (x.astype(jnp.float16) @ W).astype(jnp.float32)
  x = np.array([[0.9, 0.1], [0.2, 0.7]], np.float32)
  r = certify.radius(net, x, method="crown", options=OPTS)
  assert np.all(np.isfinite(r.l2)) and np.all(np.isfinite(r.margin))
  assert np.all(np.asarray(r.l2) <= _grid_distance(net, x))


@pytest.mark.slow
@pytest.mark.parametrize("box", [True, False])
def test_alpha_crown_never_below_crown_and_finite(box):
  """Without the box, the ball's norm at the label's zero row gave α-CROWN NaN
  gradients: NaN margins and radii far below CROWN's."""
  net = lambda p, v: jax.nn.relu(v @ p[0] + 0.1) @ p[1]
  for seed in range(3):
    k = jax.random.split(jax.random.PRNGKey(seed), 2)
    p = (jax.random.normal(k[0], (2, 8)), jax.random.normal(k[1], (8, 3)))
    x = np.random.RandomState(seed).rand(6, 2).astype(np.float32)
    o = OPTS._replace(box=box, alpha_steps=10)
    crown = certify.radius((net, p), x, method="crown", options=o)
    alpha = certify.radius((net, p), x, method="alpha-crown", options=o)
    assert np.all(np.isfinite(alpha.margin)) and np.all(np.isfinite(alpha.l2))
    assert np.all(np.asarray(alpha.l2) >= np.asarray(crown.l2) * search.TIE), seed
    assert np.all(np.asarray(alpha.l2) <= _grid_distance(lambda v: net(p, v), x))


class Scaled(nn.Module):
  """ReLU then sigmoid layers; the first layer's weights × s, the second's / s:
  the same function for every s > 0 (up to float32)."""
  s: float = 1.0

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(24)(x.reshape(x.shape[0], -1)) * self.s)
    return nn.Dense(5)(nn.sigmoid(nn.Dense(24)(h / self.s)))


@pytest.mark.slow
def test_radii_do_not_depend_on_the_scale_of_a_layer():
  """An absolute term (1e-7) in the slack of every line and interval cost a
  first layer scaled by 1e-6 a third of its CROWN radius; the slack is now
  relative to each bound's own terms."""
  x = np.random.RandomState(2).rand(5, 6, 6, 1).astype(np.float32)
  p = Scaled().init(jax.random.PRNGKey(2), jnp.zeros((1, 6, 6, 1)))
  r = {s: np.asarray(certify.radius((Scaled(s).apply, p), x, method="crown",
                                    options=OPTS).l2) for s in (1.0, 1e-6)}
  assert np.all(r[1.0] > 0)
  np.testing.assert_allclose(r[1e-6], r[1.0], rtol=1e-4)


@pytest.mark.parametrize("fn,name", [
    (lambda h: jax.lax.clamp(-0.5, h, 0.5), "clamp"),
    (lambda h: jax.lax.reduce_window(h, 0.0, jax.lax.max, (1, 2), (1, 1), "VALID"),
     "reduce_window"),
    (lambda h: jnp.where(h > 0, h, -1.0), "gt")])  # the x-dependent predicate
def test_what_has_no_sound_rule_is_refused_by_name(fn, name):
  """The audit's refusals (the rules module's table): a clamp, a window max
  from another initial value, a select whose predicate depends on x."""
  W = jnp.ones((2, 3)) / 2
  with pytest.raises(certify.UnsupportedPrimitiveError, match=f"'{name}'"):
    certify.radius(lambda x: fn(x @ W), np.full((1, 2), 0.5, np.float32))


@pytest.mark.slow
def test_minmax_rule_below_a_dense_grid_and_exact_when_sorted():
  """MinMax (GroupSort-2) of two x-dependent units: the max/min-of-two rule
  (`certify.pair`) holds against a dense grid on 2-D nets (the issue-29
  activation; before, 'min' of two bounded operands was refused)."""
  def net(p, x):
    h = models.minmax(x @ p[0] + p[1])
    return models.minmax(h @ p[2]) @ p[3]
  for seed in range(3):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    p = (jax.random.normal(k[0], (2, 6)) * 2, jax.random.normal(k[1], (6,)),
         jax.random.normal(k[2], (6, 6)), jax.random.normal(k[3], (6, 3)))
    x = np.random.RandomState(seed).rand(8, 2).astype(np.float32)
    grid = _grid_distance(lambda v: net(p, v), x)
    radii = {m: np.asarray(certify.radius((net, p), x, method=m, options=OPTS).l2)
             for m in ("ibp", "crown")}
    for m, r in radii.items():
      assert np.all(np.isfinite(r)) and np.all(r <= grid), (seed, m, r, grid)
    assert np.all(radii["crown"] >= radii["ibp"]) and np.mean(radii["crown"]) > 0


@pytest.mark.slow
def test_the_lipschitz_job_follows_parameters_changed_in_place():
  """The engine's certificate job kept its layer bounds by the model object's
  identity: the same hole as `certify.batch`'s cache, closed the same way."""
  from advjax.runs import jobs  # pylint: disable=import-outside-toplevel
  m = models.get_model("FC20-20-10")
  params = jax.tree_util.tree_map(np.array, m.init(jax.random.PRNGKey(0)))
  x = np.random.RandomState(1).rand(3, *m.input_shape).astype(np.float32)
  pb = inputs.problem((m.apply, params), x)
  job = jobs.certify(OPTS._replace(method="lipschitz"))
  lo, hi = np.zeros_like(x), np.ones_like(x)
  go = lambda: np.asarray(job.fn(pb, x, lo, hi, None, None, None).l2)
  before = go()
  for a in jax.tree_util.tree_leaves(pb.model.params):
    a *= 4.0  # in place
  fresh = jobs.certify(OPTS._replace(method="lipschitz"))
  np.testing.assert_array_equal(go(), np.asarray(fresh.fn(pb, x, lo, hi, None, None, None).l2))
  assert not np.array_equal(go(), before)


def test_pool_upper_lines_hold_at_every_point():
  """α's upper lines of a window max (`pool.upper_lines`: convex mixes of the
  constant, the sum and the near line) hold at random points and corners of
  random boxes, for random weights, windows with SAME padding included; at
  w₀ = 1 the line is DeepPoly's constant."""
  from advjax.certify import interpret, pool  # pylint: disable=import-outside-toplevel
  net = lambda p, x: nn.max_pool(x, (2, 2), (1, 1), padding="SAME").reshape(1, -1)
  g = interpret.trace(net, (), (4, 4, 2))
  k = next(i for i, n in enumerate(g.nodes) if n.prim.name.startswith("reduce_window"))
  node = g.nodes[k]
  rng = np.random.RandomState(0)
  with jax.enable_x64(True):  # as the certificate computes (float64 bounds)
    for trial in range(6):
      l = rng.randn(1, 4, 4, 2) * (0.1 if trial % 2 else 1.0)  # near ties, then spread
      u = l + rng.rand(1, 4, 4, 2) * (0.05 if trial == 2 else 1.0)
      r = pool.relax(node, jnp.asarray(l), jnp.asarray(u), 1e-7)
      w = jnp.asarray(rng.rand(2, *r.top.shape))
      w = w.at[0].set(jnp.where(rng.rand(*r.top.shape) < 0.2, 1.0, w[0] * (trial / 5)))
      a, b = pool.upper_lines(r, pool.patches(node, l, -jnp.inf), pool.patches(node, u, -jnp.inf),
                              1e-7, w)
      corners = rng.randint(0, 2, (200, 1, 4, 4, 2))
      z = np.concatenate([l + corners * (u - l), l + rng.rand(200, 1, 4, 4, 2) * (u - l)])
      for zi in z:
        y = np.asarray(jnp.max(pool.patches(node, jnp.asarray(zi), -jnp.inf), 0))
        line = np.asarray(jnp.sum(a * pool.patches(node, jnp.asarray(zi), 0.0), 0) + b)
        assert np.all(y <= line), (trial, np.max(y - line))
      top = np.asarray(w[0]) == 1.0
      np.testing.assert_array_equal(np.asarray(b)[top], np.asarray(r.top)[top])
      assert not np.any(np.asarray(a)[:, top])
