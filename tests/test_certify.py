"""Certified radii (advjax.certify): sound against attacks and grids, exact on
affine models, ordered as the methods should be, refusing what has no rule.

Compilation dominates the time here: one options value (OPTS) and one model
object per name keep it to one compile per model and method."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from advjax import certify, models
from advjax.attack import targets
from advjax.attack import lbfgs
from advjax.certify import CertifyOptions, search

SHAPE = (6, 6, 1)
OPTS = CertifyOptions(alpha_steps=4)
TIE = search.TIE  # a bound above another: its radius, up to the search


class MLP(nn.Module):
  """A small MLP (flatten, hidden layers with `act`, K logits)."""
  hidden: tuple = (24, 24)
  act: str = "relu"
  classes: int = 5

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    for h in self.hidden:
      x = getattr(nn, self.act)(nn.Dense(h)(x))
    return nn.Dense(self.classes)(x)


class ConvNet(nn.Module):
  """conv 3×3, ReLU, then 2×2 max-pooling and 2×2 average pooling side by side
  (concatenated), dense."""

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(4, (3, 3))(x))
    hm = nn.max_pool(h, (2, 2), (2, 2)).reshape(x.shape[0], -1)
    ha = nn.avg_pool(h, (2, 2), (2, 2)).reshape(x.shape[0], -1)
    return nn.Dense(4)(jnp.concatenate([hm, ha], -1))


def _pair(module, seed=0, scale=1.0):
  params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1,) + SHAPE))
  params = jax.tree_util.tree_map(lambda a: a * scale, params)
  return (module.apply, params)


def _x(n, seed=0, shape=SHAPE):
  x = np.random.RandomState(seed).rand(n, *shape).astype(np.float32)
  x[:, 0] = 0.0  # some pixels on the box's faces: the box matters there
  x[:, -1] = 1.0
  return x


def _fc20():
  """advjax's FC20-20-10 (sigmoid), weights scaled up from random init."""
  m = models.get_model("FC20-20-10")
  p = jax.tree_util.tree_map(lambda a: a * 3, m.init(jax.random.PRNGKey(0)))
  return (m.apply, p), _x(3, 5, m.input_shape)


_MODELS = {
    "sigmoid": _fc20,
    "relu": lambda: (_pair(MLP(), 2, 1.5), _x(4, 2)),
    "conv": lambda: (_pair(ConvNet(), 3, 1.5), _x(3, 3)),
    "linear": lambda: (_pair(MLP(hidden=(), classes=4), 4, 2.0), _x(4, 4)),
}


@functools.lru_cache(maxsize=None)
def _model(name):
  """One model object per name, so that compiled certificates are reused."""
  return _MODELS[name]()


@functools.lru_cache(maxsize=None)
def _attack_l2(name):
  model, x = _model(name)
  res = lbfgs(model, x)
  return np.where(np.asarray(res.success), np.asarray(res.l2), np.inf)


@pytest.mark.slow
@pytest.mark.parametrize("name,methods", [
    ("sigmoid", ("lipschitz", "ibp", "crown")), ("relu", ("ibp", "crown", "alpha-crown")),
    ("conv", ("crown",)), ("linear", ("ibp", "crown", "exact"))])
def test_below_attack(name, methods):
  """Every method's radius is at most the attack's distance (where it succeeds);
  the Lipschitz bound is positive and looser than CROWN."""
  model, x = _model(name)
  adv = _attack_l2(name)
  assert np.isfinite(adv).any()
  radii = {}
  for m in methods:
    r = certify.radius(model, x, method=m, options=OPTS)
    radii[m] = l2 = np.asarray(r.l2)
    assert np.all(np.isfinite(l2)) and np.all(l2 >= 0), m
    assert np.all(l2 <= adv), (m, l2, adv)
    assert np.all(np.asarray(r.margin)[l2 > 0] >= 0), m
    np.testing.assert_allclose(r.distortion, l2 / np.sqrt(x[0].size), rtol=1e-6)
  if "lipschitz" in radii:
    assert np.all(radii["lipschitz"] > 0) and np.all(radii["lipschitz"] <= radii["crown"])


def _toy(acts, seed):
  """A 2-D net 2-6-6-3 as a plain function (its weights are closed over)."""
  k = jax.random.split(jax.random.PRNGKey(seed), 3)
  W = [jax.random.normal(k[0], (2, 6)) * 3, jax.random.normal(k[1], (6, 6)),
       jax.random.normal(k[2], (6, 3))]
  b = [jnp.linspace(-1, 1, 6), jnp.linspace(0.5, -0.5, 6), jnp.zeros(3)]
  f = [{"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh,
        # max-pooling 2 wide, stride 1, SAME (padded), over the 6 units after a ReLU
        "maxpool": lambda h: nn.max_pool(jax.nn.relu(h)[..., None], (2,), (1,), "SAME")[..., 0]
        }[a] for a in acts]

  def net(x):
    h = f[0](x @ W[0] + b[0])
    return f[1](h @ W[1] + b[1]) @ W[2] + b[2]
  return net


@pytest.mark.slow
@pytest.mark.parametrize("acts", [("relu", "relu"), ("sigmoid", "tanh"), ("relu", "maxpool")])
def test_below_dense_grid_on_2d_nets(acts):
  """No grid point of the box closer than the radius has another label (α-CROWN
  on max-pooling: its optimised upper lines of the windows)."""
  net = _toy(acts, {"relu": 0, "tanh": 1, "maxpool": 2}[acts[1]])
  g = np.linspace(0, 1, 301, dtype=np.float32)
  grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
  pred = np.asarray(jnp.argmax(net(jnp.asarray(grid)), -1))
  x = np.random.RandomState(0).rand(12, 2).astype(np.float32)
  label = np.asarray(jnp.argmax(net(jnp.asarray(x)), -1))
  for method in ("crown",) + (("alpha-crown",) if acts[0] == "relu" else ()):
    r = np.asarray(certify.radius(net, x, method=method, options=OPTS).l2)
    for i in range(len(x)):
      other = grid[pred != label[i]]
      d = np.min(np.linalg.norm(other - x[i], axis=1)) if len(other) else np.inf
      assert r[i] <= d, (method, i, r[i], d)
    assert np.mean(r) > 0


def _scipy_exact(W, b, x, lo, hi):
  """min over j ≠ l of the box-constrained QP min ‖r‖ s.t. z_j ≥ z_l (SLSQP)."""
  z = x @ W + b
  l = int(np.argmax(z))
  best = np.inf
  for j in range(len(z)):
    if j == l:
      continue
    a, m = W[:, j] - W[:, l], z[l] - z[j]
    if np.sum(np.where(a > 0, a * (hi - x), a * (lo - x))) < m:
      continue  # not reachable inside the box
    for start in (np.zeros_like(x), np.clip(a * m / (a @ a), lo - x, hi - x)):
      res = optimize.minimize(
          lambda r: 0.5 * r @ r, start, jac=lambda r: r, method="SLSQP",
          bounds=list(zip(lo - x, hi - x)), options=dict(ftol=1e-14, maxiter=500),
          constraints=[dict(type="ineq", fun=lambda r: a @ r - m, jac=lambda r: a)])
      if res.success and a @ res.x >= m - 1e-7:
        best = min(best, np.linalg.norm(res.x))
  return best


@pytest.mark.slow
def test_exact_on_linear_matches_scipy_and_crown_ibp_equal_exact():
  model, x = _model("linear")
  apply, params = model
  W = np.asarray(params["params"]["Dense_0"]["kernel"], np.float64)
  b = np.asarray(params["params"]["Dense_0"]["bias"], np.float64)
  xf = x.reshape(len(x), -1).astype(np.float64)
  ref = np.array([_scipy_exact(W, b, xi, np.zeros(36), np.ones(36)) for xi in xf])
  ex = certify.radius(model, x, method="exact", options=OPTS).l2
  np.testing.assert_allclose(ex, ref, rtol=1e-4)
  assert np.all(ex <= ref)  # a lower bound, even against the solver
  for m in ("crown", "ibp"):  # compiled by test_below_attack
    np.testing.assert_allclose(certify.radius(model, x, method=m, options=OPTS).l2, ex,
                               rtol=1e-4)
  # without the box: the distance to the nearest hyperplane, and never larger
  z = xf @ W + b
  l = z.argmax(1)
  ball = [min((z[i, l[i]] - z[i, j]) / np.linalg.norm(W[:, j] - W[:, l[i]])
              for j in range(4) if j != l[i]) for i in range(len(x))]
  nobox = certify.radius(model, x, method="crown", options=OPTS._replace(box=False)).l2
  np.testing.assert_allclose(nobox, ball, rtol=1e-4)
  f32 = certify.radius(model, x, method="crown", options=OPTS._replace(dtype="float32")).l2
  np.testing.assert_allclose(f32, ex, rtol=2e-3)
  assert np.all(f32 <= np.asarray(ex) * (1 + 1e-5))
  assert np.all(nobox <= ex) and np.any(nobox < ex * 0.999)


@pytest.mark.slow
def test_orderings_on_relu_mlp():
  model, x = _model("relu")
  run = lambda m, **kw: certify.radius(model, x, method=m, options=OPTS._replace(**kw)).l2
  ibp, crown, alpha = run("ibp"), run("crown"), run("alpha-crown")
  out = run("alpha-crown", alpha_scope="output")  # α in the output's pass only
  assert np.mean(crown) >= np.mean(ibp) and np.all(crown >= ibp * TIE)
  for a in (alpha, out):
    assert np.all(a >= crown * TIE) and np.mean(a) > np.mean(crown)
  assert np.any(alpha > out * (1 + 1e-3))  # the intermediate layers' slopes count
  nobox = run("crown", box=False)
  assert np.all(crown >= nobox * TIE) and np.mean(crown) > np.mean(nobox)


@pytest.mark.parametrize("fn,name", [(jnp.sin, "sin"), (lambda h: jnp.sort(h, -1), "sort")])
def test_unsupported_primitive_is_named(fn, name):
  W = jnp.ones((36, 3)) / 36
  model = lambda x: fn(x.reshape(len(x), -1) @ W)
  with pytest.raises(certify.UnsupportedPrimitiveError, match=f"'{name}'"):
    certify.radius(model, _x(2))


@pytest.mark.slow
def test_misclassified_gives_zero_and_no_nan():
  for name, methods in (("relu", ("ibp", "crown", "alpha-crown")),
                        ("sigmoid", ("lipschitz", "ibp", "crown"))):
    model, x = _model(name)
    z = model[0](model[1], jnp.asarray(x))
    wrong = np.asarray((jnp.argmax(z, -1) + 1) % z.shape[1], np.int32)
    for m in methods:
      r = certify.radius(model, x, wrong, method=m, options=OPTS)
      assert np.all(r.l2 == 0) and np.all(np.isfinite(r.margin)) and np.all(r.margin <= 0)


@pytest.mark.slow
def test_refusals():
  model, x = _model("relu")
  with pytest.raises(ValueError, match="affine"):
    certify.radius(model, x, method="exact")
  with pytest.raises(ValueError, match="advjax.models.Model"):
    certify.radius(model, x, method="lipschitz")
  with pytest.raises(ValueError, match="method"):
    certify.radius(model, x, method="nope")
  with pytest.raises(ValueError, match="alpha_scope='both'"):
    certify.radius(model, x, method="alpha-crown", options=OPTS._replace(alpha_scope="both"))


@pytest.mark.slow
def test_model_kinds_pool_rewrite_and_per_example_box():
  """The conv net through convgrad's custom-VJP convolutions and pool gives the
  same radii; an Equinox module works; a per-example box equals one box per call."""
  import equinox as eqx
  from advjax import adapt
  from advjax.platform import convgrad
  model, x = _model("conv")
  r = certify.radius(model, x, method="crown", options=OPTS)
  w = adapt.wrap(model, SHAPE)
  lo, hi = np.zeros_like(x), np.ones_like(x)
  canon = certify.batch(convgrad.canonical(w.apply), w.params, jnp.asarray(x),
                        r.label, lo, hi, OPTS)
  np.testing.assert_allclose(canon.l2, r.l2, rtol=1e-6)
  mlp = eqx.nn.MLP(36, 3, 8, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
  r_eqx = certify.radius(mlp, _x(3, 8).reshape(3, 36), options=OPTS).l2
  assert np.all(np.isfinite(r_eqx)) and np.all(r_eqx > 0)
  tops = [np.maximum(x[i], t) for i, t in enumerate((1.0, 0.9, 0.8))]
  per = np.asarray(certify.radius(model, x, bounds=(lo, np.stack(tops)), options=OPTS).l2)
  for i, top in enumerate(tops):  # the same example thrice in one box
    one = certify.radius(model, np.repeat(x[i:i + 1], 3, 0), bounds=(0.0, top),
                         options=OPTS).l2
    np.testing.assert_allclose(per[i], one[0], rtol=1e-6)



def _tiny_conv():
  """An advjax Model (so the Lipschitz constants exist): conv 3×3 ReLU,
  2×2 max-pooling, dense."""
  L = models.Layer
  m = models.Model("tinyconv", (
      L("conv1", "conv", 4, (3, 3)), L("relu1", "relu"),
      L("pool1", "maxpool", kernel=(2, 2), stride=2, padding="VALID"),
      L("flatten", "flatten"), L("logits", "dense", 4)), SHAPE, 4)
  p = jax.tree_util.tree_map(lambda a: a * 1.5, m.init(jax.random.PRNGKey(6)))
  return (m.apply, p), _x(4, 6)


@pytest.mark.slow
def test_conv_maxpool_crown_ibp_lipschitz_floor_and_rtol():
  """On a max-pooling conv net: CROWN ≥ IBP; with lipschitz_floor the radius
  is ≥ both CROWN and the Lipschitz radius (their max, up to the search's
  grid) and the method says so; rtol stops early below the full search; all
  stay below the attack's distance."""
  model, x = _tiny_conv()
  adv = np.asarray(lbfgs(model, x).l2)
  adv = np.where(np.asarray(lbfgs(model, x).success), adv, np.inf)
  run = lambda m, **kw: certify.radius(model, x, method=m, options=OPTS._replace(**kw))
  ibp, crown, lip = (np.asarray(run(m).l2) for m in ("ibp", "crown", "lipschitz"))
  floor = run("crown", lipschitz_floor=True)
  fast = run("crown", rtol=0.01)
  assert floor.method == "crown+lipschitz" and run("crown").method == "crown"
  assert np.all(crown >= ibp) and np.all(lip > 0) and np.isfinite(adv).any()
  f = np.asarray(floor.l2)
  assert np.all(f >= lip) and np.all(f >= crown * (1 - 1e-4))
  assert np.all(np.asarray(floor.margin)[f > 0] >= 0)
  assert np.all(np.asarray(fast.l2) <= crown * (1 + 1e-6))
  assert np.all(np.asarray(fast.l2) >= crown / 1.02)
  full = np.asarray(run("crown").evaluations)  # the secant search may converge as soon
  assert np.all(np.asarray(fast.evaluations) <= full) and fast.evaluations.sum() < full.sum()
  for r in (ibp, crown, lip, f, np.asarray(fast.l2)):
    assert np.all(np.isfinite(r)) and np.all(r >= 0) and np.all(r <= adv), (r, adv)


def _deep_conv():
  """An advjax Model with every rule of the per-unit Lipschitz bounds: two
  convs, ReLU, max-pooling, flatten, a sigmoid dense layer, dense logits."""
  L = models.Layer
  m = models.Model("deepconv", (
      L("conv1", "conv", 4, (3, 3)), L("relu1", "relu"),
      L("pool1", "maxpool", kernel=(2, 2), stride=2, padding="VALID"),
      L("conv2", "conv", 6, (3, 3)), L("relu2", "relu"), L("flatten", "flatten"),
      L("fc1", "dense", 12), L("sig1", "sigmoid"), L("logits", "dense", 4)), SHAPE, 4)
  p = jax.tree_util.tree_map(lambda a: a * 2.0, m.init(jax.random.PRNGKey(8)))
  return (m.apply, p), _x(4, 8)


@pytest.mark.slow
def test_unit_bounds_bound_every_units_gradient_and_crown_stays_sound():
  """`lipschitz.unit_bounds`: ‖∇ₓ v_u‖₂ ≤ U_u for every unit of every variable
  it bounds, at several points (U is a global bound); CROWN with the bounds
  (`lipschitz_units`) stays below the attack (its gain is measured on the paper's
  conv net: experiments.certify)."""
  from advjax import adapt  # pylint: disable=import-outside-toplevel
  from advjax.certify import bounds, interpret  # pylint: disable=import-outside-toplevel
  from advjax.certify import lipschitz as clip  # pylint: disable=import-outside-toplevel
  model, x = _deep_conv()
  w = adapt.wrap(model, SHAPE)
  with jax.enable_x64(True):
    g = interpret.trace(w.apply, w.params, SHAPE)
    plan = bounds.make_plan(g, OPTS)
    env = interpret.constants(g, jax.tree_util.tree_leaves(w.params), jnp.float64)
    lu = clip.unit_bounds(g, plan, env, w.params, clip.constants(w.apply, w.params).norms,
                          jnp.float64)
    assert {g.nodes[g.producer[v]].prim.name for v in lu} >= {
        "conv_general_dilated", "reduce_window_max", "logistic", "dot_general"}
    f = lambda z: {v: interpret.evaluate(g, env, z, jnp.float64)[v].reshape(-1) for v in lu}
    jac, worst = jax.jit(jax.jacrev(f)), 0.0  # every variable's Jacobian in one pass
    for xi in x:
      J = jac(jnp.asarray(xi, jnp.float64))
      for v, u in lu.items():
        ratio = jnp.linalg.norm(J[v].reshape(u.size, -1), axis=1) / jnp.maximum(
            u.reshape(-1), 1e-300)
        worst = max(worst, float(jnp.max(jnp.where(u.reshape(-1) > 0, ratio, 0))))
    assert worst <= 1.0 + 1e-9 and worst > 0.05  # sound, and not vacuous
  res = lbfgs(model, x)
  adv = np.where(np.asarray(res.success), np.asarray(res.l2), np.inf)
  units = certify.radius(model, x, method="crown", options=OPTS._replace(lipschitz_units=True))
  assert units.method == "crown+lipschitz"
  u = np.asarray(units.l2)
  assert np.all(np.isfinite(u)) and np.all(u > 0) and np.all(u <= adv), (u, adv)


@pytest.mark.slow
def test_box_distance_matches_scipy_and_is_safe_at_zero_gradients():
  rng = np.random.default_rng(0)
  n = 8
  for _ in range(4):
    g = rng.normal(size=(3, n)).astype(np.float32)
    g[:, 0] = 0.0  # a pixel the model ignores: no overflow, no NaN
    g[0, 1] = 1e-38
    x0 = rng.uniform(0, 1, n)
    x0[2:4] = 0.0, 1.0  # pixels on the box
    lo, hi = (-x0).astype(np.float32), (1 - x0).astype(np.float32)
    delta = np.abs(rng.normal(size=3)).astype(np.float32) * 0.5
    d = np.asarray(targets.box_distance(jnp.asarray(g), jnp.asarray(delta), jnp.asarray(lo),
                                        jnp.asarray(hi)))
    for k in range(3):
      if np.sum(np.where(g[k] > 0, g[k] * hi, g[k] * lo)) < delta[k]:
        assert d[k] == np.inf
        continue
      res = optimize.minimize(lambda r: r @ r, np.zeros(n), jac=lambda r: 2 * r,
                              method="SLSQP", bounds=list(zip(lo, hi)),
                              options=dict(ftol=1e-14, maxiter=500),
                              constraints=[dict(type="ineq", fun=lambda r: g[k] @ r - delta[k],
                                                jac=lambda r: g[k])])
      np.testing.assert_allclose(d[k], np.sqrt(res.fun), rtol=1e-4)
  assert targets.box_distance(jnp.ones((1, 3)), jnp.asarray([-1.0]), -jnp.ones(3),
                              jnp.ones(3))[0] == 0.0  # already across


@pytest.mark.slow
def test_the_attack_meets_the_exact_minimum_on_a_linear_model():
  """Issue 21's closed bracket: the default untargeted attack lands within 1% of
  the exact minimum inside the box on every example (0.1% on the mean), and its
  screen names the label of that minimum."""
  model, _ = _model("linear")
  apply, params = model
  x = _x(16, 7)
  ex = np.asarray(certify.radius(model, x, method="exact", options=OPTS).l2)
  res = lbfgs(model, x)
  d = np.asarray(res.l2)
  assert np.all(np.asarray(res.success)) and np.all(d >= ex)
  ok = ex > 1e-3
  q = d[ok] / ex[ok] - 1
  assert q.mean() <= 1e-3 and q.max() <= 1e-2, q
  W = np.asarray(params["params"]["Dense_0"]["kernel"])
  b = np.asarray(params["params"]["Dense_0"]["bias"])
  xf = x.reshape(len(x), -1)
  z = xf @ W + b
  l = z.argmax(1)
  per_example = lambda p, v: apply(p, v[None])[0]
  near = np.asarray(targets.screen(per_example, z.shape[1], 1, params, jnp.asarray(x),
                                   jnp.asarray(l, jnp.int32), 0.0, 1.0)[:, 0])
  box_distance = jax.jit(targets.box_distance)  # one compile (eager, each call compiled)
  for i in np.flatnonzero(ok):
    dist = np.array(box_distance(jnp.asarray((W - W[:, l[i], None]).T),
                                  jnp.asarray(z[i, l[i]] - z[i]), jnp.asarray(-xf[i]),
                                  jnp.asarray(1 - xf[i])))
    dist[l[i]] = np.inf  # every other label j, one row each
    np.testing.assert_allclose(min(dist), ex[i], rtol=1e-3)  # the 1-D form, in float32
    assert near[i] == int(np.argmin(dist))


@pytest.mark.slow
def test_options_added_later_keep_older_certificates_identity():
  """Options added after radii were first recorded (rtol, lipschitz_floor,
  lipschitz_units) are left out of a job's identity at their old behaviour, so
  older caches resume as the same job; set, they make another job."""
  from advjax.runs import identity  # pylint: disable=import-outside-toplevel
  base = identity.certify_options(CertifyOptions())
  assert not {"rtol", "lipschitz_floor", "lipschitz_units"} & set(base)
  for kw in (dict(rtol=0.01), dict(lipschitz_floor=True), dict(lipschitz_units=True)):
    assert identity.certify_options(CertifyOptions(**kw)) != base, kw
  # α's scope: the old α-CROWN (output pass only) keeps its identity, the joint
  # one (the default now) is another job; CROWN's identity ignores the scope
  alpha = CertifyOptions(method="alpha-crown")
  old = identity.certify_options(alpha._replace(alpha_scope="output"))
  assert "alpha_scope" not in old and identity.certify_options(alpha) != old
  assert base == identity.certify_options(CertifyOptions(alpha_scope="output"))
