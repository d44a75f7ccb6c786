"""No NaN bound, ever: non-finite weights are refused by name, zero and empty
operators get exactly 0, every certified value returned is finite (§4.3)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import models, train
from advjax.norms import layers, spectral, upper_bounds

matmul = lambda x, w: x @ w


def _nan(shape, where=0, value=np.nan):
  a = np.random.RandomState(0).randn(*shape).astype(np.float32)
  a.flat[where] = value
  return a


@pytest.mark.slow
def test_power_method_on_zero_matrix_is_exactly_zero():
  """Power iteration divided 0 by 0: estimate NaN next to upper 0."""
  for method in ("power", "lanczos"):
    r = spectral.operator_norm(matmul, (5,), args=(jnp.zeros((5, 4)),),
                               method=method)
    assert (r.estimate, r.upper) == (0.0, 0.0), r
  # too big for the dense path: ARPACK said "starting vector is zero"
  r = spectral.operator_norm(matmul, (100,), args=(jnp.zeros((100, 80)),),
                             certify=False)
  assert r.estimate == 0.0 and r.upper is None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_by_name(bad):
  W = _nan((5, 4), 3, bad)
  K = _nan((3, 3, 1, 2), 5, bad)
  err = upper_bounds.NonFiniteError
  with pytest.raises(err, match=r"operator_norm: args\[0\] holds 1 NaN/inf"):
    spectral.operator_norm(matmul, (5,), args=(jnp.asarray(W),), method="power")
  with pytest.raises(err, match="dense_norm: W holds 1 NaN/inf"):
    spectral.dense_norm(W)
  with pytest.raises(err, match="conv_norm: kernel_hwio holds 1 NaN/inf"):
    spectral.conv_norm(K, (6, 6, 1))
  # weights closed over (not in args): caught at the linearity check
  with pytest.raises(err, match="fn gives NaN/inf"):
    spectral.operator_norm(lambda x: x @ jnp.asarray(W), (5,))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_certificates_refuse_non_finite_input(bad):
  """cholesky_upper of a NaN matrix 'certified' 1.0001; the FFT bound of a
  NaN kernel was 0.0; gram_upper returned nan."""
  W, K = _nan((6, 4), 2, bad), _nan((3, 3, 1, 1), 4, bad)
  err = upper_bounds.NonFiniteError
  with pytest.raises(err, match="gram_upper: W holds"):
    upper_bounds.gram_upper(W)
  with pytest.raises(err, match="cholesky_upper: W holds"):
    upper_bounds.cholesky_upper(W, 1.0)
  with pytest.raises(err, match="circular_conv_norm: kernel holds"):
    upper_bounds.circular_conv_norm(K, (6, 6))
  with pytest.raises(err, match="cholesky_upper: lower"):
    upper_bounds.cholesky_upper(np.eye(3), bad)


@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (0, 0), (3, 5)])
def test_zero_and_empty_operators_are_exactly_zero(shape):
  """Empty matrices raised 'need at least one array to stack', DSYRK or
  IndexError; zero ones ARPACK's 'starting vector is zero'."""
  W = np.zeros(shape, np.float32)
  assert upper_bounds.gram_upper(W) == 0.0
  assert upper_bounds.cholesky_upper(W, 0.0) == 0.0
  r = spectral.dense_norm(W)
  assert (r.estimate, r.upper) == (0.0, 0.0)


def test_zero_and_empty_kernels_are_exactly_zero():
  for kshape, ishape in [((3, 3, 1, 2), (6, 6, 1)), ((3, 3, 1, 0), (6, 6, 1)),
                         ((3, 3, 0, 2), (6, 6, 0))]:
    K = np.zeros(kshape, np.float32)
    r = spectral.conv_norm(K, ishape)
    assert (r.estimate, r.upper) == (0.0, 0.0), kshape
    assert upper_bounds.circular_conv_norm(K, (6, 6)) == 0.0
    assert upper_bounds.circular_conv_norm(K, (6, 6), rtol=1e-4) == 0.0
  r = spectral.operator_norm(matmul, (0,), args=(jnp.zeros((0, 3)),))
  assert (r.estimate, r.upper) == (0.0, 0.0)


def test_extreme_scales_stay_certified_and_finite():
  """1e-200 entries squared to 0 (a bound of 0 for a nonzero matrix); 1e200
  ones overflowed to a math domain error. Power-of-two scaling is exact."""
  W = np.random.RandomState(1).randn(7, 5)
  truth = np.linalg.norm(W, 2)
  for scale in (1e-200, 1e200):
    got = upper_bounds.gram_upper(W * scale, rtol=0)
    assert truth * (1 - 1e-12) <= got / scale <= truth * (1 + 1e-6)
    up = upper_bounds.cholesky_upper(W * scale, truth * scale * (1 - 1e-9))
    assert truth * (1 - 1e-12) <= up / scale <= truth * (1 + 1e-3)
    K = W[:3, :3].reshape(3, 3, 1, 1) * scale
    exact = upper_bounds.circular_conv_norm(W[:3, :3].reshape(3, 3, 1, 1), (6, 6))
    assert math.isclose(upper_bounds.circular_conv_norm(K, (6, 6)) / scale, exact,
                        rel_tol=1e-12)


def test_overflowing_bound_raises_not_inf():
  with pytest.raises(upper_bounds.NonFiniteError, match="came out inf"):
    upper_bounds.certified(float("inf"), "test")
  assert upper_bounds.certified(np.float32(2.5), "test") == 2.5
  # float32 WᵀW overflows: an error that says so, not an ARPACK failure
  W = np.full((40, 30), 1e25, np.float32)
  with pytest.raises(upper_bounds.NonFiniteError, match="overflows float32"):
    spectral.dense_norm(W)


@pytest.mark.slow
def test_layer_bounds_names_the_non_finite_layer():
  model = models.get_model("FC100-100-10")
  params = model.init(jax.random.PRNGKey(0))
  k = np.array(params["fc2"]["kernel"])
  k[3, 4] = np.nan
  params = dict(params, fc2=dict(params["fc2"], kernel=k))
  with pytest.raises(upper_bounds.NonFiniteError,
                     match=r"^layer 'fc2' \(dense\): dense_norm: W holds 1 NaN/inf"):
    layers.layer_bounds(model, params)


def test_dead_aliases_and_reexports_are_gone():
  """train.predict was unused; norms.layers re-exported the spectral functions
  and spectral those of upper_bounds for callers that no longer exist."""
  assert not hasattr(train, "predict")
  for name in ("NormResult", "conv_fn", "gram_upper", "operator_norm",
               "circular_conv_norm"):
    assert not hasattr(layers, name), name
  for name in ("gram_upper", "cholesky_upper", "circular_conv_norm"):
    assert not hasattr(spectral, name), name
