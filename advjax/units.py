"""Units of φ(x) versus random directions (Szegedy et al. §3).

The paper's first property: the images x ∈ I that maximise a single unit,
argmax ⟨φ(x), e_i⟩, look as "semantic" as those that maximise a random
direction, argmax ⟨φ(x), v⟩. The paper shows pictures only; this module
computes the top-k images per direction and measures how coherent a top-k set
is, so the claim can be tested by the number:

  * `features` computes φ(x) in batches (flattened, one jit per batch shape);
  * `top_k` streams φ(x) batch by batch and keeps a running top-k per
    direction, so memory is O(D·(k + batch)) whatever the size of I;
  * `natural_basis` and `random_directions` build the two kinds of direction
    (random ones are Gaussian, normalised to unit norm; the paper does not say
    how it drew v, and the ranking does not depend on the norm anyway);
  * `label_purity`, `label_agreement`, `pairwise_cosine` score a top-k set;
    `random_sets` gives the chance baseline (k images drawn uniformly);
  * `bootstrap_ci` and `permutation_test` (`scipy.stats.bootstrap` and
    `scipy.stats.permutation_test`) compare the distributions;
  * `group_values` and `compare` are the comparison itself: coherence of the
    unit sets, the random-direction sets and the null, and units − random.

Ties in scores are broken by the lower image index (as numpy's stable argsort
of the negated scores), so results are deterministic.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from advjax import batching, models

Params = Any


class TopK(NamedTuple):
  """The k best images per direction, best first.

  Attributes:
    scores: (D, k) float32, ⟨φ(x), v_d⟩ of the chosen images.
    index: (D, k) int32, their rows in the image set.
  """
  scores: np.ndarray
  index: np.ndarray


class Interval(NamedTuple):
  """A mean with a bootstrap confidence interval [lo, hi]."""
  mean: float
  lo: float
  hi: float


class Coherence(NamedTuple):
  """Coherence of D top-k sets, one value per set (§3, advjax's measure).

  Attributes:
    purity: (D,) share of the majority label in the set.
    agreement: (D,) share of pairs with equal labels (chance: Σ_c p_c²).
    cosine: (D,) mean pairwise cosine of the set in an embedding (NaN if none).
  """
  purity: np.ndarray
  agreement: np.ndarray
  cosine: np.ndarray


def _check_layer(model: models.Model, layer: str) -> None:
  """Raises a ValueError naming the layers when `layer` is not one of them."""
  if layer not in model.layer_names():
    raise ValueError(f"model {model.name!r} has no layer {layer!r}; choose one "
                     f"of {model.layer_names()}.")


def _check_images(model: models.Model, x: np.ndarray) -> None:
  """Raises when `x` is not a batch of the model's inputs."""
  if x.ndim != len(model.input_shape) + 1 or x.shape[1:] != model.input_shape:
    raise ValueError(f"images have shape {x.shape} but model {model.name!r} "
                     f"takes (N, {', '.join(map(str, model.input_shape))}).")
  if len(x) == 0:
    raise ValueError("the image set is empty; pass at least one image.")


def layer_dim(model: models.Model, layer: str) -> int:
  """Size of the flattened φ(x) of `layer` (the number of its units)."""
  _check_layer(model, layer)
  x = jax.ShapeDtypeStruct((1,) + model.input_shape, jnp.float32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  f = jax.eval_shape(lambda p, x: model.features(p, x, layer), params, x)
  return int(np.prod(f.shape[1:]))


@functools.partial(jax.jit, static_argnames=("model", "layer"))
def _phi(model: models.Model, layer: str, params: Params, x: jax.Array):
  """Flattened φ(x) of one batch, (B, d)."""
  f = model.features(params, x, layer)
  return f.reshape(f.shape[0], -1)


def _batches(n: int, batch_size: int):
  """(start, stop) of each batch of range(n)."""
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}; it must be at least 1.")
  return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def features(model: models.Model, params: Params, x: np.ndarray, layer: str,
             batch_size: int = 500) -> np.ndarray:
  """φ(x) of the named layer for a whole image set, in batches (§3).

  Args:
    model: the network.
    params: its parameters.
    x: images (N, *model.input_shape).
    layer: a layer name of `model` (e.g. 'relu3', 'sigmoid2').
    batch_size: images per forward pass; the last batch is padded so the
      function is compiled once.

  Returns:
    float32 array (N, d): flattened activations.
  """
  _check_layer(model, layer)
  x = np.asarray(x, np.float32)
  _check_images(model, x)
  size = min(batch_size, len(x))
  out = [np.asarray(_phi(model, layer, params, batching.pad(x[a:b], size)))[:b - a]
         for a, b in _batches(len(x), size)]
  return np.concatenate(out)


def natural_basis(d: int) -> np.ndarray:
  """The natural basis e_1..e_d as rows of a (d, d) float32 matrix (§3)."""
  if d < 1:
    raise ValueError(f"d={d}; a layer has at least one unit.")
  return np.eye(d, dtype=np.float32)


def random_directions(key: jax.Array, n: int, d: int) -> np.ndarray:
  """n random directions v in R^d, Gaussian normalised to unit norm (§3).

  The paper does not say how v was drawn; an isotropic Gaussian normalised to
  ‖v‖ = 1 is uniform on the sphere. The same key gives the same directions.

  Returns:
    float32 array (n, d), rows of norm 1.
  """
  if n < 1 or d < 1:
    raise ValueError(f"random_directions(n={n}, d={d}): both must be >= 1.")
  v = jax.random.normal(key, (n, d), jnp.float32)
  return np.asarray(v / jnp.linalg.norm(v, axis=1, keepdims=True))


@functools.partial(jax.jit, static_argnames=("model", "layer"))
def _merge(model: models.Model, layer: str, params: Params, V: jax.Array,
           best_s: jax.Array, best_i: jax.Array, x: jax.Array,
           n_valid: jax.Array, start: jax.Array):
  """Merges one batch's scores into the running top-k per direction."""
  f = model.features(params, x, layer).reshape(x.shape[0], -1)
  s = jnp.matmul(V, f.T, precision=jax.lax.Precision.HIGHEST)  # (D, B)
  row = jnp.arange(x.shape[0], dtype=jnp.int32)
  # Padded rows must never be chosen: -inf loses to every real score.
  s = jnp.where(row[None, :] < n_valid, s, -jnp.inf)
  # Current best first: lax.top_k prefers the earlier of equal values, and the
  # current best come from earlier images, so ties go to the lower index.
  cand_s = jnp.concatenate([best_s, s], axis=1)
  cand_i = jnp.concatenate(
      [best_i, jnp.broadcast_to(start + row, s.shape)], axis=1)
  top_s, pos = jax.lax.top_k(cand_s, best_s.shape[1])
  return top_s, jnp.take_along_axis(cand_i, pos, axis=1)


def top_k(model: models.Model, params: Params, x: np.ndarray, layer: str,
          directions: np.ndarray, k: int, batch_size: int = 500) -> TopK:
  """The k images of `x` with the largest ⟨φ(x), v⟩ for each direction v (§3).

  φ(x) is streamed batch by batch and never held for the whole set; a running
  top-k per direction is merged with each batch's scores by `jax.lax.top_k`.

  Args:
    model: the network.
    params: its parameters.
    x: the image set I, (N, *model.input_shape).
    layer: the layer whose activations φ(x) are projected.
    directions: (D, d) matrix of directions as rows, d = `layer_dim`; e.g.
      `natural_basis(d)` or `random_directions(key, D, d)`.
    k: images per direction, 1 <= k <= N.
    batch_size: images per step; one compilation for all steps.

  Returns:
    TopK(scores (D, k), index (D, k)), best first; ties go to the lower index.
  """
  _check_layer(model, layer)
  x = np.asarray(x, np.float32)
  _check_images(model, x)
  V = np.asarray(directions, np.float32)
  d = layer_dim(model, layer)
  if V.ndim != 2 or V.shape[1] != d:
    raise ValueError(f"directions have shape {V.shape}; layer {layer!r} of "
                     f"{model.name!r} needs (D, {d}).")
  if not 1 <= k <= len(x):
    raise ValueError(f"k={k} must be between 1 and the number of images "
                     f"({len(x)}).")
  size = min(batch_size, len(x))
  best_s = jnp.full((len(V), k), -jnp.inf, jnp.float32)
  best_i = jnp.full((len(V), k), -1, jnp.int32)
  for a, b in _batches(len(x), size):
    best_s, best_i = _merge(model, layer, params, V, best_s, best_i,
                            batching.pad(x[a:b], size), jnp.int32(b - a), jnp.int32(a))
  return TopK(np.asarray(best_s), np.asarray(best_i))


def unique_sets(t: TopK, k: int) -> np.ndarray:
  """(D,) bool: the top-k set is defined without ties (needs t of width > k).

  A dead ReLU unit (all scores 0), a unit active on fewer than k images, or a
  sigmoid unit saturated to the same float32 value on more than k images has
  its k-th and (k+1)-th scores equal; its "top-k" would be an arbitrary pick,
  so such directions are left out of the statistics and counted.
  """
  if t.scores.shape[1] <= k:
    raise ValueError(f"unique_sets needs the top-(k+1) scores; got "
                     f"{t.scores.shape[1]} columns for k={k}.")
  return t.scores[:, k - 1] > t.scores[:, k]


def random_sets(seed: int, n_sets: int, k: int, n: int) -> np.ndarray:
  """(n_sets, k) index sets of k distinct images drawn uniformly (the null)."""
  if not 1 <= k <= n:
    raise ValueError(f"k={k} must be between 1 and n={n}.")
  rng = np.random.default_rng(seed)
  return np.stack([rng.choice(n, k, replace=False) for _ in range(n_sets)])


def label_purity(index: np.ndarray, y: np.ndarray) -> np.ndarray:
  """(D,) share of the majority label in each top-k set (1 = one label)."""
  lab = np.asarray(y)[np.asarray(index)]
  counts = np.stack([(lab == c).sum(1) for c in np.unique(lab)], 1)
  return counts.max(1) / lab.shape[1]


def label_agreement(index: np.ndarray, y: np.ndarray) -> np.ndarray:
  """(D,) share of the k(k-1)/2 pairs with equal labels; chance is Σ_c p_c²."""
  lab = np.asarray(y)[np.asarray(index)]
  k = lab.shape[1]
  if k < 2:
    raise ValueError("label_agreement needs k >= 2 images per set.")
  same = (lab[:, :, None] == lab[:, None, :]).sum((1, 2)) - k
  return same / (k * (k - 1))


def pairwise_cosine(index: np.ndarray, emb: np.ndarray) -> np.ndarray:
  """(D,) mean cosine similarity over the distinct pairs of each top-k set.

  Args:
    index: (D, k) rows of `emb`, k >= 2.
    emb: (N, e) embedding of the image set, e.g. another network's penultimate
      layer (centre it first so that chance is near 0, see `center`).
  """
  index = np.asarray(index)
  k = index.shape[1]
  if k < 2:
    raise ValueError("pairwise_cosine needs k >= 2 images per set.")
  z = np.asarray(emb, np.float64)[index]
  z = z / np.maximum(np.linalg.norm(z, axis=2, keepdims=True), 1e-12)
  gram = np.einsum("dke,dje->dkj", z, z)
  return (gram.sum((1, 2)) - np.trace(gram, axis1=1, axis2=2)) / (k * (k - 1))


def center(emb: np.ndarray) -> np.ndarray:
  """The embedding minus its mean over the image set (cosine chance ≈ 0)."""
  emb = np.asarray(emb, np.float32)
  return emb - emb.mean(0, keepdims=True)


def coherence(index: np.ndarray, y: np.ndarray,
              emb: np.ndarray | None = None) -> Coherence:
  """All coherence measures of the top-k sets `index` (D, k) (§3).

  Args:
    index: (D, k) image rows, e.g. `TopK.index[:, :k]` or `random_sets(...)`.
    y: (N,) labels of the image set.
    emb: optional (N, e) embedding for `pairwise_cosine`.
  """
  cos = (pairwise_cosine(index, emb) if emb is not None
         else np.full(len(index), np.nan))
  return Coherence(label_purity(index, y), label_agreement(index, y), cos)


def bootstrap_ci(v: np.ndarray, seed: int = 0, n_boot: int = 10000,
                 level: float = 0.95) -> Interval:
  """Percentile bootstrap CI of the mean of `v` (§3; `scipy.stats.bootstrap`)."""
  v = np.asarray(v, np.float64)
  if v.ndim != 1 or len(v) == 0:
    raise ValueError(f"bootstrap_ci needs a non-empty 1-D sample; got {v.shape}.")
  if len(v) == 1 or np.all(v == v[0]):  # scipy returns NaN for a degenerate sample
    return Interval(float(v[0]), float(v[0]), float(v[0]))
  ci = stats.bootstrap((v,), np.mean, n_resamples=n_boot, batch=1000,
                       confidence_level=level, method="percentile",
                       rng=np.random.default_rng(seed)).confidence_interval
  return Interval(float(v.mean()), float(ci.low), float(ci.high))


def _mean_diff(a, b, axis):
  return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def permutation_test(a: np.ndarray, b: np.ndarray, seed: int = 0,
                     n_perm: int = 10000) -> float:
  """Two-sided permutation p-value of mean(a) − mean(b) (§3).

  `scipy.stats.permutation_test` with independent samples: p = 2·min of the
  one-sided p-values (capped at 1), each with the +1 correction of a
  randomised test, or the exact p when n_perm exceeds the partitions.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if len(a) == 0 or len(b) == 0:
    raise ValueError("permutation_test needs two non-empty samples.")
  r = stats.permutation_test((a, b), _mean_diff, vectorized=True,
                             n_resamples=n_perm, batch=1000,
                             alternative="two-sided",
                             rng=np.random.default_rng(seed))
  return float(r.pvalue)


# ----------------------------------------------------------------------------
# The comparison of §3: units e_i against random directions v.

MEASURES = {"purity": "label purity (majority share)",
            "agreement": "pair label agreement",
            "cos_other": "cosine, other net's features (centred)",
            "cos_pixels": "cosine, pixels (centred)"}
GROUPS = ("units", "random", "null")


def group_values(t: TopK, n_units: int, k: int, null: np.ndarray,
                 y: np.ndarray, embs: dict[str, np.ndarray]) -> tuple[dict, dict]:
  """Per group, the coherence of its unique top-k sets; and the counts left out (§3).

  Args:
    t: top-(k+1) of the directions [e_1..e_{n_units}, v_1..] (units first).
    n_units: how many rows of `t` are units.
    k: set size.
    null: (n_null, k) random index sets (`random_sets`).
    y: labels of the image set.
    embs: measure name → centred (N, e) embedding for `pairwise_cosine`.

  Returns:
    ({group: {measure: (n_sets,) values}}, {'units'|'random': sets left out}).
  """
  ok = unique_sets(t, k)
  idx = {"units": t.index[:n_units, :k][ok[:n_units]],
         "random": t.index[n_units:, :k][ok[n_units:]], "null": null}
  out = {}
  for g, ix in idx.items():
    coh = coherence(ix, y)
    out[g] = {"purity": coh.purity, "agreement": coh.agreement,
              **{m: pairwise_cosine(ix, e) for m, e in embs.items()}}
  left_out = {"units": int(n_units - ok[:n_units].sum()),
              "random": int(len(ok) - n_units - ok[n_units:].sum())}
  return out, left_out


def compare(vals: dict, seed: int = 0, n_boot: int = 10000,
            n_perm: int = 10000) -> dict:
  """Units vs random directions, per measure (§3).

  For each measure of `vals` (from `group_values`): the mean and percentile
  bootstrap 95% CI per group, and for units − random the difference of
  means, its two-sided permutation p and the two-sample KS p (whole
  distributions; ties make KS conservative).
  """
  res = {}
  for m in MEASURES:
    if m not in vals["units"]:
      continue
    r = {g: dict(bootstrap_ci(vals[g][m], seed, n_boot)._asdict(),
                 n=len(vals[g][m])) for g in GROUPS if len(vals[g][m])}
    if "units" in r and "random" in r:
      u, v = vals["units"][m], vals["random"][m]
      r["units_minus_random"] = r["units"]["mean"] - r["random"]["mean"]
      r["p_perm"] = permutation_test(u, v, seed, n_perm)
      r["p_ks"] = float(stats.ks_2samp(u, v).pvalue)
    res[m] = r
  return res
