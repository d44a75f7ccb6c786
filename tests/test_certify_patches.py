"""CROWN through convolutions in patches (`advjax.certify.patches`, issue 28).

The patches pass must give the dense pass's intermediate bounds (to ~1e-9 in
float64): against `bounds.refine` (Λ dense, pulled back by `jax.vjp`) and
against a slow reference written here, with every node of the chain as its
dense matrix (`jax.jacfwd`) and the bound by back-substitution; then the radii
with patches must stay below the §4.1 attack's distance and below PGD-L2."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import netgen
from advjax import adapt, certify
from advjax.attack import lbfgs
from advjax.certify import bounds, compose, concretize, interpret, patches
from advjax.certify.options import CertifyOptions

SHAPE = (7, 7, 2)
# Each net is a chain the patches support: stride 2, SAME / VALID / explicit
# padding, dilation, feature groups, max and average pooling, constant padding,
# ReLU, sigmoid, tanh, max/min with constants.
NETS = {
    "strided": (("conv", 4, 3, 2, 1, 1, "SAME"), ("act", "relu"),
                ("conv", 4, 2, 1, 2, 2, "VALID"), ("act", "relu")),
    "explicit_maxpool": (("conv", 4, 2, 1, 1, 2, ((1, 0), (0, 2))), ("act", "sigmoid"),
                         ("maxpool", 2, 1, "SAME"), ("conv", 2, 3, 2, 1, 1, "SAME"),
                         ("act", "tanh")),
    "avgpool_pad": (("conv", 4, 3, 1, 2, 1, "SAME"), ("act", "relu"),
                    ("avgpool", 2, 2, "VALID"), ("pad", 0.7, 0),
                    ("conv", 4, 2, 1, 1, 2, "VALID"), ("act", "max_c")),
    "maxpool_strided": (("conv", 4, 3, 1, 1, 1, "VALID"), ("act", "relu"),
                        ("maxpool", 2, 2, "VALID"), ("conv", 4, 2, 1, 1, 1, "SAME"),
                        ("act", "relu"), ("conv", 2, 3, 1, 1, 2, "SAME"), ("act", "min_c")),
}
DENSE = CertifyOptions(crown_budget=1 << 40, tol=0.0)
PATCHED = CertifyOptions(crown_budget=0, patches=True, patch_budget=1 << 30, tol=0.0)


@functools.lru_cache(maxsize=None)
def _net(name, seed=0):
  """(apply, params) of a netgen program on SHAPE inputs (scaled up: unstable
  units) and 4 points of the box (one pixel on a face)."""
  prog = ("image",) + NETS[name]
  rng = np.random.default_rng(seed)
  p, h = {}, jax.ShapeDtypeStruct((1,) + SHAPE, jnp.float32)
  for k, b in enumerate(prog[1:]):
    p[str(k)] = netgen._block_params(b, h, rng, 2.0)  # pylint: disable=protected-access
    h = jax.eval_shape(functools.partial(netgen._apply_block, b), p[str(k)], h)  # pylint: disable=protected-access
  n = int(np.prod(h.shape[1:]))
  p["out"] = {"W": (rng.normal(size=(n, netgen.K)) * 2 / np.sqrt(n)).astype(np.float32),
              "b": (0.1 * rng.normal(size=netgen.K)).astype(np.float32)}
  x = rng.random((4,) + SHAPE).astype(np.float32)
  x[-1, 0, 0, 0] = 0.0
  return (netgen.net(prog), jax.tree_util.tree_map(jnp.asarray, p)), x


def _ctx(model, x0, opts, wide=False):
  """A `bounds.Ctx` of one example (as `search._one` builds it), label = the
  prediction, box [0, 1] (wide: no lower end on every other pixel); call
  inside jax.enable_x64."""
  w = adapt.wrap(model, SHAPE)
  g = interpret.trace(w.apply, w.params, SHAPE)
  plan = bounds.make_plan(g, opts)
  env = interpret.constants(g, jax.tree_util.tree_leaves(w.params), jnp.float64)
  x0 = jnp.asarray(x0, jnp.float64)
  clean = interpret.evaluate(g, env, x0, jnp.float64)
  z = interpret.read(clean, g.out)
  K = z.shape[0]
  C = jax.nn.one_hot(jnp.argmax(z), K, dtype=jnp.float64)[None] - jnp.eye(K)
  even = jnp.arange(x0.size).reshape(x0.shape) % 2 == 0
  A = jnp.where(jnp.logical_and(wide, even), -jnp.inf, -x0)  # wide may be traced
  return bounds.Ctx(g, plan, env, clean, bounds.rownorms(g, plan, env, jnp.float64),
                    x0, A, 1 - x0, C, opts)


def _dense_reference(c, rl, v, eps):
  """(lower, upper) of v: every node from v down to x as its dense matrix
  (jacfwd of the node in its bounded input) or relaxation, back-substituted."""
  g = c.g
  n_v = int(np.prod(g.shapes[v]))
  lam = jnp.concatenate([jnp.eye(n_v), -jnp.eye(n_v)])
  off = jnp.zeros(2 * n_v)
  for s in patches.chain(g, c.plan.kinds, c.plan.rounds, v):
    node = g.nodes[s.k]
    if s.kind == "act":
      al, bl, au, bu = (a.reshape(-1) for a in rl[s.k])
      pos, neg = jnp.maximum(lam, 0), jnp.minimum(lam, 0)
      off = off + pos @ bl + neg @ bu
      lam = pos * al + neg * au
      continue
    consts = [None if isinstance(i, int) and i in g.bounded else
              jnp.asarray(interpret.read(c.env, i), jnp.float64) for i in node.ins]
    if node.prim.name == "reduce_window_max":  # DeepPoly: z_j below, z_j or top above
      r = rl[s.k]
      sel = lambda y, r=r, node=node: jnp.sum(r.onehot * pool_windows(node, y), 0)
      dom, top = r.dom.reshape(-1), r.top.reshape(-1)
      pos, neg = jnp.maximum(lam, 0), jnp.minimum(lam, 0)
      off = off + jnp.where(dom, 0.0, neg) @ jnp.where(dom, 0.0, top)
      lam, f, f0 = pos + jnp.where(dom, neg, 0.0), sel, jnp.zeros(lam.shape[1])
    else:
      def f(y, node=node, s=s, consts=consts):
        args = list(consts)
        args[s.pos] = y
        return interpret.bind(node, args, jnp.float64)[0]
      f0 = f(jnp.zeros(g.shapes[s.y])).reshape(-1)
    M = jax.jacfwd(f)(jnp.zeros(g.shapes[s.y])).reshape(-1, int(np.prod(g.shapes[s.y])))
    off = off + lam @ f0
    lam = lam @ M
  val = lam @ c.x0.reshape(-1) + off
  low = val + concretize.ball_box(lam, c.A.reshape(-1), c.B.reshape(-1), eps,
                                  c.opts.intermediate_steps)[0]
  return low[:n_v].reshape(g.shapes[v]), -low[n_v:].reshape(g.shapes[v])


def pool_windows(node, y):
  from advjax.certify import pool  # pylint: disable=import-outside-toplevel
  return pool.patches(node, y, 0.0)


@functools.partial(jax.jit, static_argnums=(0,))  # one compile per net
def _compare(name, x0, eps, wide):
  """Per patched variable: (patches as `bounds` runs them, dense pass,
  dense-matrix reference, the patched forward's interval, the dense forward's
  interval, patches again a position at a time, the chain pass alone)."""
  model, _ = _net(name)
  dense, pat = _ctx(model, x0, DENSE, wide), _ctx(model, x0, PATCHED, wide)
  iv_d, rl, _ = bounds.forward(dense, eps)
  iv_p, _, _ = bounds.forward(pat, eps)
  one = pat._replace(opts=PATCHED._replace(patch_budget=1))  # a position per chunk
  return {v: (compose.refine(pat, rl, v, eps), bounds.refine(dense, iv_d, rl, v, eps),
              _dense_reference(dense, rl, v, eps), iv_p[v], iv_d[v],
              compose.refine(one, rl, v, eps), patches.refine(pat, rl, v, eps))
          for v in sorted(pat.plan.patched)}


@pytest.mark.slow  # compiles CROWN on a small conv net (15-60 s)
@pytest.mark.parametrize("name", sorted(NETS))
def test_patches_equal_the_dense_pass_and_a_dense_matrix_reference(name):
  model, x = _net(name)
  with jax.enable_x64(True):
    dense, pat = _ctx(model, x[0], DENSE), _ctx(model, x[0], PATCHED)
    assert pat.plan.patched and pat.plan.intervals == 0
    assert pat.plan.patched <= dense.plan.refine
    for x0, eps, wide in ((x[0], 0.3, False), (x[-1], 0.8, True)):
      out = _compare(name, jnp.asarray(x0, jnp.float64), eps, wide)
      for v, (p, d, r, ivp, ivd, chunked, along) in out.items():
        scale = 1 + float(jnp.max(jnp.abs(jnp.stack(d))))
        for a, b in zip(p + p + ivp + along, d + r + ivd + d):  # lower, upper of each
          np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * scale, err_msg=str(v))
        for a, b in zip(p, chunked):  # chunking changes nothing (but the last bit)
          np.testing.assert_allclose(a, b, rtol=0, atol=1e-13 * scale)
        assert float(jnp.mean(p[1] - p[0])) > 1e-3  # not a degenerate test


@pytest.mark.slow  # over 1.5 s on 2 cores (session 11)
def test_composition_applies_where_the_chain_is_separable():
  """`compose.split` takes the second convolution of the nets whose layer
  below is a ReLU or a non-overlapping max pool, and no other variable."""
  found = {}
  for name in sorted(NETS):
    model, x = _net(name)
    with jax.enable_x64(True):
      c = _ctx(model, x[0], PATCHED)
    for v in c.plan.patched:
      steps = patches.chain(c.g, c.plan.kinds, c.plan.rounds, v)
      convs = sum(s.kind == "conv" for s in steps)
      found[(name, convs)] = compose.split(c.g, steps) is not None
  assert found == {("strided", 1): False, ("strided", 2): True,
                   ("explicit_maxpool", 1): False, ("explicit_maxpool", 2): False,
                   ("avgpool_pad", 1): False, ("avgpool_pad", 2): False,
                   ("maxpool_strided", 1): False, ("maxpool_strided", 2): True,
                   ("maxpool_strided", 3): False}, found


@pytest.mark.slow
def test_unsupported_chains_fall_back_and_say_so_and_radii_rise():
  """A residual add (no patch rule) keeps its interval and the method says so;
  on a supported net the option gives larger radii."""
  prog = ("image", ("conv", 2, 3, 1, 1, 1, "SAME"), ("act", "relu"), ("residual",),
          ("act", "relu"))
  p = netgen.params(prog, 1)
  xr = np.random.default_rng(1).random((2, 5, 5, 1)).astype(np.float32)
  res = certify.radius((netgen.net(prog), p), xr, options=PATCHED)
  assert res.method == "crown+intervals" and np.all(np.isfinite(res.l2))
  model, x = _net("strided")
  off = certify.radius(model, x, options=CertifyOptions(crown_budget=0))
  on = certify.radius(model, x, options=CertifyOptions(crown_budget=0, patches=True))
  assert on.method == "crown" and off.method == "crown+intervals"  # looser: said
  # tighter intermediate bounds change CROWN's adaptive slopes, so a radius
  # can drop (here one of four, by 6%); on the whole they rise
  assert np.mean(on.l2) > np.mean(off.l2)


@pytest.mark.slow  # compiles CROWN on a small conv net (15-60 s)
@pytest.mark.parametrize("name", sorted(NETS))
def test_patched_radii_below_the_attack_and_pgd(name):
  model, x = _net(name)
  opts = CertifyOptions(crown_budget=0, patches=True, alpha_steps=4)
  res = lbfgs(model, x)
  adv = np.where(np.asarray(res.success), np.asarray(res.l2), np.inf)
  for method in ("crown", "alpha-crown") if name == "strided" else ("crown",):
    r = certify.radius(model, x, method=method, options=opts)
    rho = np.asarray(r.l2)
    assert np.all(np.isfinite(rho)) and np.all(rho <= adv), (method, rho, adv)
    assert np.any(rho > 0)
    label = jnp.asarray(r.label)
    gap = netgen.pgd(model[0], model[1], jnp.asarray(x), label, jnp.asarray(rho),
                     key=jax.random.PRNGKey(0))
    assert np.all(np.asarray(gap) <= 0), (method, gap)


def test_the_options_keep_older_certificates_identity_and_are_checked():
  """patches and patch_budget at their defaults leave a job's identity as it
  was before them; patches=True is another job; a zero budget is refused."""
  from advjax.runs import identity  # pylint: disable=import-outside-toplevel
  base = identity.certify_options(CertifyOptions())
  assert not {"patches", "patch_budget"} & set(base)
  assert identity.certify_options(CertifyOptions(patches=True)) != base
  with pytest.raises(ValueError, match="patch_budget"):
    CertifyOptions(patch_budget=0).check()
