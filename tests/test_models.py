"""Output shapes, parameter counts, features and layer sequences of the models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import models

COUNTS = {  # Σ (fan_in + 1) · fan_out, by hand
    "FC10(1e-4)": 785 * 10,
    "FC100-100-10": 785 * 100 + 101 * 100 + 101 * 10,
    "FC200-200-10": 785 * 200 + 201 * 200 + 201 * 10,
    "FC123-456-10": 785 * 123 + 124 * 456 + 457 * 10,
    "AE400-10": 785 * 400 + 401 * 10,
    "conv": (25 + 1) * 32 + (25 * 32 + 1) * 64 + (7 * 7 * 64 + 1) * 128 + 129 * 10,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_shapes_and_counts(name):
  m = models.get_model(name)
  p = m.init(jax.random.PRNGKey(0))
  assert models.num_params(p) == COUNTS[name]
  assert m.apply(p, jnp.zeros((3, 28, 28, 1))).shape == (3, 10)


def test_alexnet_shapes():
  m = models.get_model("alexnet")
  shapes = jax.eval_shape(m.init, jax.random.PRNGKey(0))
  assert shapes["conv1"]["kernel"].shape == (11, 11, 3, 96)
  assert shapes["fc1"]["kernel"].shape == (9216, 4096)  # Table 5's FC1 size
  out = jax.eval_shape(m.apply, shapes, jax.ShapeDtypeStruct((2, 227, 227, 3), jnp.float32))
  assert out.shape == (2, 1000)
  tv = models.get_model("alexnet-torchvision")
  assert jax.eval_shape(tv.init, jax.random.PRNGKey(0))["fc1"]["kernel"].shape == (9216, 4096)


@pytest.mark.slow
def test_features_and_sigmoid_range():
  m = models.get_model("FC100-100-10")
  p = m.init(jax.random.PRNGKey(1))
  x = jax.random.uniform(jax.random.PRNGKey(2), (4, 28, 28, 1))
  h = m.features(p, x, "sigmoid2")
  assert h.shape == (4, 100) and float(h.min()) > 0 and float(h.max()) < 1
  manual = jax.nn.sigmoid(m.features(p, x, "fc2"))
  np.testing.assert_allclose(h, manual, rtol=1e-6)
  logits = h @ p["logits"]["kernel"] + p["logits"]["bias"]
  np.testing.assert_allclose(m.apply(p, x), logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m.apply_from(p, m.features(p, x, "sigmoid1"), "sigmoid1"),
                             m.apply(p, x), rtol=1e-5, atol=1e-6)
  with pytest.raises(KeyError, match="no layer named"):
    m.features(p, x, "fc9")


@pytest.mark.slow  # over 1.5 s on 2 cores (session 11)
def test_decay_per_layer_and_penalty():
  m = models.get_model("FC100-100-10")
  assert [L.decay for L in m.param_layers()] == [1e-5, 1e-5, 1e-6]
  assert models.get_model("FC10(0.5)").param_layers()[0].decay == 0.5
  p = m.init(jax.random.PRNGKey(0))
  want = sum(0.5 * L.decay * float(jnp.sum(p[L.name]["kernel"] ** 2)) for L in m.param_layers())
  np.testing.assert_allclose(float(m.weight_penalty(p)), want, rtol=1e-5)


def test_same_key_same_params_and_prime_name():
  a = models.get_model("FC100-100-10'").init(jax.random.PRNGKey(7))
  b = models.get_model("FC100-100-10").init(jax.random.PRNGKey(7))
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
  assert models.get_model("FC100-100-10'").name == "FC100-100-10'"


def test_unknown_model():
  with pytest.raises(ValueError, match="unknown model"):
    models.get_model("FC7")


def test_lrn_matches_loop():
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 2, 2, 7))
  got = models.lrn(x, 5, 1e-2, 0.75, 2.0)
  xs = np.asarray(x)
  want = np.empty_like(xs)
  for c in range(7):
    s = (xs[..., max(0, c - 2):c + 3] ** 2).sum(-1)
    want[..., c] = xs[..., c] / (2.0 + 1e-2 / 5 * s) ** 0.75
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.slow
def test_certified_training_nets_and_minmax():
  """Wong et al.'s small conv net and GloRo's 4C3F (issue 29): their published
  sizes; MinMax sorts each pair (norm-preserving); orthogonal kernels."""
  wong, c4 = models.get_model("wong-small"), models.get_model("4C3F")
  pw, pc = wong.init(jax.random.PRNGKey(0)), c4.init(jax.random.PRNGKey(0))
  assert models.num_params(pw) == 16 * 16 + 16 + 32 * 256 + 32 + 1568 * 100 + 100 + 1010
  assert models.num_params(pc) == 1974762  # 7.9 MB in float32
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8)), jnp.float32)
  y = models.minmax(x)
  np.testing.assert_array_equal(y[:, 0::2], jnp.minimum(x[:, 0::2], x[:, 1::2]))
  np.testing.assert_array_equal(y[:, 1::2], jnp.maximum(x[:, 0::2], x[:, 1::2]))
  np.testing.assert_allclose(jnp.linalg.norm(y, axis=1), jnp.linalg.norm(x, axis=1))
  W = np.asarray(pc["fc2"]["kernel"])
  np.testing.assert_allclose(W.T @ W, np.eye(512), atol=1e-5)
  K = np.asarray(pc["conv3"]["kernel"]).reshape(-1, 64)  # (3·3·32, 64): columns orthonormal
  np.testing.assert_allclose(K.T @ K, np.eye(64), atol=1e-5)
  assert c4.apply(pc, jnp.zeros((2, 28, 28, 1))).shape == (2, 10)
  with pytest.raises(ValueError, match="even"):
    models.minmax(jnp.ones((2, 3)))
  # GloRo's minmax_cnn_2C2F: wong-small's layers ('same' padding is 1 each side),
  # MinMax, orthogonal kernels.
  g = models.get_model("2C2F")
  pg = g.init(jax.random.PRNGKey(1))
  assert models.num_params(pg) == models.num_params(pw)
  assert [L.kind for L in g.layers] == [("minmax" if L.kind == "relu" else L.kind)
                                        for L in wong.layers]
  K = np.asarray(pg["fc1"]["kernel"])  # (1568, 100): orthonormal columns
  np.testing.assert_allclose(K.T @ K, np.eye(100), atol=1e-5)
  xi = jnp.asarray(np.random.default_rng(1).random((2, 28, 28, 1)), jnp.float32)
  same = jax.lax.conv_general_dilated(xi, pg["conv1"]["kernel"], (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(g.features(pg, xi, "minmax1"),
                             models.minmax(same + pg["conv1"]["bias"]), rtol=1e-5, atol=1e-6)
