"""The XLA:CPU rewrite (`advjax.platform.convgrad`): convolution and max-pool input
gradients on the fast path inside loops, equal to autodiff; applied once where
the model enters (`advjax.inputs`); a warning where it cannot reach."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from advjax import attack
from advjax.platform import convgrad

from conftest import K


def _convnet(dn, strides, padding, dilation):
  k = jax.random.split(jax.random.PRNGKey(0), 3)
  W1 = jax.random.normal(k[0], (3, 3, 2, 4)) * 0.3  # HWIO
  W2 = jax.random.normal(k[1], (2, 2, 4, 3)) * 0.3
  W3 = jax.random.normal(k[2], (3 * 16, K)) * 0.3
  params = (W1, W2, W3)
  def apply(params, x):  # one example (8, 8, 2)
    W1, W2, W3 = params
    lhs = x[None] if dn[0] == "NHWC" else jnp.transpose(x, (2, 0, 1))[None]
    rhs = W1 if dn[1] == "HWIO" else jnp.transpose(W1, (3, 2, 0, 1))
    h = jax.nn.relu(lax.conv_general_dilated(lhs, rhs, strides, padding,
                                             rhs_dilation=dilation, dimension_numbers=dn))
    h = h if dn[0] == "NHWC" else jnp.transpose(h, (0, 2, 3, 1))
    h = jax.jit(lambda h: lax.conv_general_dilated(  # inside a pjit, too
        h, W2, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))(h)
    h = jax.image.resize(h, (1, 4, 4, 3), "nearest")
    return h.reshape(-1) @ W3
  return apply, params


@pytest.mark.slow
@pytest.mark.parametrize("dn,strides,padding,dilation", [
    (("NHWC", "HWIO", "NHWC"), (1, 1), "SAME", (1, 1)),
    (("NHWC", "HWIO", "NHWC"), (2, 2), "VALID", (1, 1)),
    (("NCHW", "OIHW", "NCHW"), (2, 1), ((1, 2), (0, 1)), (2, 1)),
])
def test_convgrad_equals_autodiff(dn, strides, padding, dilation):
  apply, params = _convnet(dn, strides, padding, dilation)
  fast = convgrad._Canonical(apply)  # pylint: disable=protected-access (the CPU path)
  x = jax.random.uniform(jax.random.PRNGKey(1), (8, 8, 2))
  f = lambda a: (lambda z: jnp.sum(jnp.sin(a(params, z))))
  np.testing.assert_allclose(fast(params, x), apply(params, x), rtol=1e-6, atol=1e-6)
  g0, g1 = jax.grad(f(apply))(x), jax.grad(f(fast))(x)
  np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-6)
  # batched and inside a loop, as the attack uses it
  xs = jax.random.uniform(jax.random.PRNGKey(2), (3, 8, 8, 2))
  def loop(a):
    g = jax.vmap(jax.grad(f(a)))
    return jax.jit(lambda z: lax.fori_loop(0, 3, lambda i, z: z - 0.1 * g(z), z))(xs)
  np.testing.assert_allclose(loop(fast), loop(apply), rtol=1e-5, atol=1e-6)
  # the weights' gradient too (not used by the attack, but never wrong)
  gw0 = jax.grad(lambda p: jnp.sum(apply(p, x)))(params)
  gw1 = jax.grad(lambda p: jnp.sum(fast(p, x)))(params)
  for a, b in zip(gw1, gw0):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_convgrad_leaves_grouped_convs_and_dense_models_alone():
  W = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 1, 4))
  grouped = lambda p, x: lax.conv_general_dilated(
      x[None], p, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=2).reshape(-1)
  x = jnp.ones((5, 5, 2))
  closed = jax.make_jaxpr(grouped)(W, x)
  assert not convgrad._has_conv(closed.jaxpr)  # pylint: disable=protected-access
  fast = convgrad._Canonical(grouped)  # pylint: disable=protected-access
  np.testing.assert_array_equal(fast(W, x), grouped(W, x))


def _pooled(window, stride):
  """A conv, ReLU, max-pool net on 8x8x2 inputs (window, stride: per spatial axis)."""
  n = 4 * ((8 - window[0]) // stride[0] + 1) * ((8 - window[1]) // stride[1] + 1)
  W1 = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 2, 4))
  W2 = jax.random.normal(jax.random.PRNGKey(1), (n, K))
  def apply(p, x):
    h = lax.conv_general_dilated(x[None], p[0], (1, 1), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = lax.reduce_window(jax.nn.relu(h), -jnp.inf, lax.max, (1,) + window + (1,),
                          (1,) + stride + (1,), "VALID")
    return h.reshape(-1) @ p[1]
  return apply, (W1, W2)


@pytest.mark.slow
def test_convgrad_pools_equal_autodiff_ties_included():
  apply, params = _pooled((2, 2), (2, 2))
  fast = convgrad._Canonical(apply)  # pylint: disable=protected-access (the CPU path)
  # few grey levels, so that many windows hold equal maxima (and ReLU zeros)
  xs = jnp.round(4 * jax.random.uniform(jax.random.PRNGKey(2), (3, 8, 8, 2))) / 4
  f = lambda a: (lambda z: jnp.sum(jnp.sin(a(params, z))))
  ties = jnp.round(4 * jnp.ones((8, 8, 2))) / 4  # every window tied
  for x in (xs[0], ties):
    np.testing.assert_array_equal(fast(params, x), apply(params, x))
    np.testing.assert_array_equal(jax.grad(f(fast))(x), jax.grad(f(apply))(x))
  def loop(a):
    g = jax.vmap(jax.grad(f(a)))
    return jax.jit(lambda z: lax.fori_loop(0, 3, lambda i, z: z - 0.1 * g(z), z))(xs)
  np.testing.assert_allclose(loop(fast), loop(apply), rtol=1e-5, atol=1e-6)
  # an overlapping pool (AlexNet's 3x3, stride 2) is not rewritten
  over, p3 = _pooled((3, 3), (2, 2))
  eqns = jax.make_jaxpr(over)(p3, xs[0]).jaxpr.eqns
  pool = [e for e in eqns if e.primitive is lax.reduce_window_max_p]
  assert pool and not any(convgrad._rewritable(e) for e in pool)  # pylint: disable=protected-access


@pytest.mark.slow
def test_attack_on_a_conv_net_is_unchanged_by_convgrad(monkeypatch):
  apply, params = _convnet(("NHWC", "HWIO", "NHWC"), (1, 1), "SAME", (1, 1))
  model = (lambda p, x: jax.vmap(apply, (None, 0))(p, x), params)
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(3), (4, 8, 8, 2)))
  t = (np.asarray(model[0](params, x)).argmax(-1) + 1) % K
  opts = attack.AttackOptions(refine_steps=3)
  calls = []
  real = convgrad._Canonical.__call__  # pylint: disable=protected-access
  monkeypatch.setattr(convgrad._Canonical, "__call__",  # pylint: disable=protected-access
                      lambda self, p, z: calls.append(1) or real(self, p, z))
  jax.clear_caches()
  fast = attack.lbfgs(model, x, t, options=opts)
  assert calls, "the attack did not use the rewrite on the CPU backend"
  monkeypatch.setattr(convgrad, "canonical", lambda apply: apply)
  jax.clear_caches()  # compile again, without the rewrite
  n = len(calls)
  plain = attack.lbfgs(model, x, t, options=opts)
  assert len(calls) == n
  assert np.asarray(fast.success).all()
  np.testing.assert_allclose(fast.x_adv, plain.x_adv, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(fast.solves, plain.solves)


@pytest.mark.slow
def test_a_convolution_inside_scan_is_named_in_a_warning():
  W = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 1, 1)) * 0.3
  def apply(p, x):  # one example (6, 6, 1): a conv applied twice inside scan
    def body(h, _):
      h = lax.conv_general_dilated(h[None], p, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
      return jnp.tanh(h), None
    h, _ = lax.scan(body, x, None, length=2)
    return jnp.stack([h.sum(), -h.sum()])
  model = (lambda p, xs: jax.vmap(apply, (None, 0))(p, xs), W)
  x = np.full((2, 6, 6, 1), 0.5, np.float32)
  with pytest.warns(RuntimeWarning, match="inside scan/while/cond"):
    attack.lbfgs(model, x, np.array([1, 1], np.int32),
                  options=attack.AttackOptions(bisect_steps=0, first_order_steps=2,
                                                refine_steps=0, max_bracket=1))
  with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)  # a plain conv net: no warning
    apply2, params2 = _convnet(("NHWC", "HWIO", "NHWC"), (1, 1), "SAME", (1, 1))
    xs = np.full((1, 8, 8, 2), 0.5, np.float32)
    attack.lbfgs((lambda p, z: jax.vmap(apply2, (None, 0))(p, z), params2), xs,
                  np.array([1], np.int32), options=attack.AttackOptions(
                      bisect_steps=0, first_order_steps=2, refine_steps=0, max_bracket=1))
