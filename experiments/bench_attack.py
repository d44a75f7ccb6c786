"""Benchmark of the §4.1 attack against foolbox's DDN; see configs/bench_attack.py.

Every row is timed in this one process on one device: the first call (compile
and run) and the warm call (everything compiled), images per second, success,
mean per-pixel RMS over successes, and whether every x_adv is inside the box.
"""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from advjax import attack, checkpoint, criteria, models, reference, train
from advjax.attack import ddn
from experiments import common, tables
from experiments.configs import bench_attack as config

markdown = tables.bench_attack  # results.md


def timed(f):
  """(result, seconds) of f(), blocking on JAX arrays."""
  t = time.perf_counter()
  out = jax.block_until_ready(f())
  return out, time.perf_counter() - t


def measure(f, x, xa_fn, y_ok, warm: bool = True, passes=None) -> dict:
  """First and warm call of f(), with quality of its adversarial examples and
  its model passes per example (forward and backward alike; `passes(out)`).

  warm=False (rows kept for quality only): one call, its time as both.
  """
  out, first = timed(f)
  out, warm = timed(f) if warm else (out, first)
  xa, ok = xa_fn(out)
  ok = np.asarray(ok, bool) & y_ok(xa)
  d = np.asarray(criteria.rms(jnp.asarray(xa - x)))
  return dict(n=len(x), first_call_s=first, warm_s=warm, images_per_s=len(x) / warm,
              success=float(ok.mean()), mean_rms=float(d[ok].mean()) if ok.any() else None,
              in_box=bool(xa.min() >= 0 and xa.max() <= 1),
              passes_per_example=None if passes is None else float(np.mean(passes(out))))


def _reached(fn, t, y):
  """x_adv -> per example: the model's re-check (`criteria.verdict`) says t
  (targeted) or not y."""
  return lambda xa: np.asarray(criteria.verdict(
      fn(jnp.asarray(xa)), jnp.asarray(t if t is not None else y), t is None)[0])


def _advjax(model, x, t, y, opts, fn, warm: bool = True):
  """advjax targeted (t given) or untargeted, re-checked by the model."""
  f = ((lambda: attack.lbfgs(model, x, t, options=opts)) if t is not None else
       (lambda: attack.lbfgs(model, x, label=y, options=opts)))
  return measure(f, x, lambda r: (np.asarray(r.x_adv), np.asarray(r.success)),
                 _reached(fn, t, y), warm, passes=lambda r: np.asarray(r.passes))


def _ddn(fn, x, t, y, steps: int, warm: bool = True):
  """foolbox 3 DDN on the same jitted function (targeted if t is given)."""
  import foolbox as fb  # pylint: disable=import-outside-toplevel
  fm = fb.JAXModel(fn, bounds=(0, 1))
  crit = (fb.criteria.TargetedMisclassification(jnp.asarray(t)) if t is not None
          else fb.criteria.Misclassification(jnp.asarray(y)))
  atk = fb.attacks.DDNAttack(steps=steps)
  f = lambda: atk(fm, jnp.asarray(x), crit, epsilons=None)
  return measure(f, x, lambda o: (np.clip(np.asarray(o[1]), 0, 1), np.asarray(o[2])),
                 _reached(fn, t, y), warm, passes=lambda o: 2 * steps)  # a gradient a step


def _own_ddn(model, fn, x, t, y, steps: int):
  """advjax's jitted DDN (the attack's first-order part), re-checked by the model."""
  f = lambda: ddn.ddn(model, x, t, steps=steps, label=None if t is not None else y)
  return measure(f, x, lambda r: (np.asarray(r.x_adv), np.asarray(r.success)),
                 _reached(fn, t, y), passes=lambda r: np.asarray(r.passes))


def _points(fn, te, n: int, seed: int):
  """The first n correctly classified test images and random wrong targets."""
  pred = np.concatenate([np.asarray(jnp.argmax(fn(jnp.asarray(te.x[i:i + 1000])), -1))
                         for i in range(0, len(te.x), 1000)])
  idx = np.flatnonzero(pred == te.y)[:n]
  y = te.y[idx]
  t = np.asarray(attack.random_targets(jax.random.PRNGKey(seed), y, 10))
  return te.x[idx], y, t


def _mlp(cfg, tr):
  """The 784-300-100-10 ReLU MLP of the issue's yardstick, trained once and cached."""
  L = models.Layer
  layers = (L("flatten", "flatten"), L("fc1", "dense", 300), L("relu1", "relu"),
            L("fc2", "dense", 100), L("relu2", "relu"), L("logits", "dense", 10))
  m = models.Model("MLP784-300-100-10", layers, (28, 28, 1), 10)
  folder = os.path.join(cfg.runs_dir, "bench", f"mlp-{cfg.mlp_epochs}ep")
  if os.path.exists(os.path.join(folder, checkpoint.META)):
    return m, checkpoint.load(folder, m)[1]
  p = train.train(m, tr, train.TrainConfig(epochs=cfg.mlp_epochs, batch_size=128),
                  progress=cfg.progress).params
  checkpoint.save(folder, m, p, {"epochs": cfg.mlp_epochs})
  return m, p


def _conv(cfg, tr):
  """The paper's MNIST conv net: the seed-0 checkpoint, else a short training."""
  path = os.path.join(cfg.models_dir(0), "conv")
  if os.path.exists(os.path.join(path, checkpoint.META)):
    model, params, _ = checkpoint.load(path)
    return model, params, path
  m = models.get_model("conv")
  p = train.train(m, tr, train.TrainConfig(epochs=cfg.conv_epochs, batch_size=128),
                  progress=cfg.progress).params
  return m, p, f"trained here, {cfg.conv_epochs} epoch(s)"


def mnist_rows(name, model, params, te, cfg, sizes, with_ref: bool) -> dict:
  """advjax (default, paper), DDN and the reference on one MNIST model."""
  fn = jax.jit(lambda z: model.apply(params, z))
  n = sizes["n_mlp"] if name == "mlp" else sizes["n_conv"]
  x, y, t = _points(fn, te, n, cfg.seed)
  pair = (model.apply, params)
  s, b = cfg.ddn_steps
  rows = {}
  q = sizes["n_quality"] if name == "mlp" else min(n, sizes["n_quality"])

  def full_and_same(label, opts, tt):
    """The row on all images and on DDN-1000's first q (the same row if q covers all)."""
    rows[label] = _advjax(pair, x, tt, y, opts, fn)
    rows[f"{label}, same {q}"] = rows[label] if q >= len(x) else _advjax(
        pair, x[:q], None if tt is None else tt[:q], y[:q], opts, fn)

  for mode, tt in (("targeted", t), ("untargeted", None)):
    full_and_same(f"advjax default, {mode}", attack.AttackOptions(), tt)
    rows[f"DDN-{s}, {mode}"] = _ddn(fn, x, tt, y, s)
    rows[f"DDN-{b} (quality), {mode}"] = _ddn(fn, x[:q], None if tt is None else tt[:q],
                                              y[:q], b, warm=False)
    # the c search alone: the default without the first-order pass
    full_and_same(f"advjax search only, {mode}", attack.AttackOptions(first_order_steps=0), tt)
    rows[f"advjax DDN-{s}, {mode}"] = _own_ddn(pair, fn, x, tt, y, s)
  # untargeted: the 2 nearest labels instead
  full_and_same("advjax screen 2, untargeted", attack.AttackOptions(joint=False), None)
  rows["advjax PAPER, targeted"] = _advjax(pair, x, t, y, attack.PAPER, fn, warm=False)
  if with_ref:
    k = cfg.n_ref
    ref, dt = timed(lambda: reference.lbfgs_reference(pair, x[:k], t[:k]))
    rows[f"scipy reference, targeted, first {k}"] = dict(
        n=k, warm_s=dt, images_per_s=k / dt, success=float(ref.success.mean()),
        mean_rms=float(ref.distortion[ref.success].mean()), in_box=True,
        passes_per_example=None)
    for label, o in (("default", attack.AttackOptions()), ("PAPER", attack.PAPER)):
      rows[f"advjax {label}, targeted, first {k}"] = _advjax(pair, x[:k], t[:k], y, o, fn)
  return rows


def alexnet_rows(cfg, sizes) -> dict:
  """AlexNet-size (torchvision layout, random weights, params traced) throughput."""
  m = models.get_model("alexnet-torchvision")
  params = m.init(jax.random.PRNGKey(cfg.seed))
  fn = jax.jit(lambda z: m.apply(params, z))
  rows = {}
  for B in sizes["alexnet_batches"]:
    x = np.random.default_rng(B).random((B, 224, 224, 3), dtype=np.float32)
    y = np.asarray(jnp.argmax(fn(x), -1))
    t = ((y + 1 + np.arange(B) % 999) % 1000).astype(np.int32)
    rows[f"advjax default, targeted, B={B}"] = _advjax((m.apply, params), x, t, y,
                                                        attack.AttackOptions(), fn)
  return rows


def run(cfg: config.Config, workdir: str) -> dict:
  """Every workload's rows, with the ratios the issue asks for."""
  kind = "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm", "tpu") else "cpu"
  sizes = {k: (getattr(cfg, k) if getattr(cfg, k) is not None else v)
           for k, v in config.SIZES[kind].items()}
  tr, te = common.load_data(cfg)
  out = {"device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
         "jax": jax.__version__, "python": platform.python_version(),
         "sizes": sizes, "loadavg_start": os.getloadavg(), "workloads": {},
         "n_train_used": len(tr.x)}
  # each workload's rows as it ends, so a run stopped at a time limit keeps them
  for w in common.save_each(cfg.workloads, workdir, cfg, config, markdown, lambda: out):
    t0 = time.perf_counter()
    if w == "mlp":
      rows = mnist_rows(w, *_mlp(cfg, tr), te, cfg, sizes, with_ref=True)
    elif w == "conv":
      model, params, src = _conv(cfg, tr)
      rows = mnist_rows(w, model, params, te, cfg, sizes, with_ref=False)
      out["conv_source"] = src
    elif w == "alexnet":
      rows = alexnet_rows(cfg, sizes)
    else:
      raise ValueError(f"workload {w!r}: choose from mlp, conv, alexnet.")
    out["workloads"][w] = {"rows": rows, "ratios": ratios(rows, cfg),
                           "wall_s": time.perf_counter() - t0}
  out["loadavg_end"] = os.getloadavg()
  return out


def ratios(rows: dict, cfg) -> dict:
  """advjax/DDN speed and distortion ratios, advjax/reference distortion."""
  s, b = cfg.ddn_steps
  out = {}
  for who, mode in (("default", "targeted"), ("default", "untargeted"),
                    ("search only", "targeted"), ("search only", "untargeted"),
                    ("screen 2", "untargeted"), (f"DDN-{s}", "targeted"),
                    (f"DDN-{s}", "untargeted")):
    tag = f"{mode}: advjax{'' if who == 'default' else ' ' + who}"
    a, d = rows.get(f"advjax {who}, {mode}"), rows.get(f"DDN-{s}, {mode}")
    if a and d:
      out[f"{tag} speed / DDN-{s} speed"] = a["images_per_s"] / d["images_per_s"]
    q = [k for k in rows if k.startswith(f"advjax {who}, {mode}, same")]
    dq = rows.get(f"DDN-{b} (quality), {mode}")
    if q and dq and rows[q[0]]["mean_rms"] and dq["mean_rms"]:
      out[f"{tag} RMS / DDN-{b} RMS"] = rows[q[0]]["mean_rms"] / dq["mean_rms"]
  for mode in ("targeted", "untargeted"):  # advjax's DDN against foolbox's
    a, d = rows.get(f"advjax DDN-{s}, {mode}"), rows.get(f"DDN-{s}, {mode}")
    if a and d and a["mean_rms"] and d["mean_rms"]:
      out[f"{mode}: advjax DDN-{s} RMS / foolbox DDN-{s} RMS"] = a["mean_rms"] / d["mean_rms"]
  ref = [k for k in rows if k.startswith("scipy reference")]
  if ref:
    k = ref[0].rsplit(" ", 1)[-1]
    for label in ("default", "PAPER"):
      a = rows.get(f"advjax {label}, targeted, first {k}")
      if a:
        out[f"advjax {label} RMS / scipy reference RMS"] = a["mean_rms"] / rows[ref[0]]["mean_rms"]
  return out


def main(argv=None) -> dict:
  return common.main(run, config, argv, markdown=markdown)


if __name__ == "__main__":
  main()

