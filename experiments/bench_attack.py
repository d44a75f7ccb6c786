"""Benchmark of the §4.1 L-BFGS attack (Szegedy et al. Table 1's distortion measure).

On one trained FC100-100-10 and the same correctly classified MNIST test images,
in one run:
  * advjax's batched attack (`advjax.attacks.lbfgs`) with random wrong targets,
  * the per-example scipy L-BFGS-B reference of the same objective with a fine
    c search (`advjax.attacks.lbfgs_reference`) on a subset,
  * untargeted: advjax (min over all targets) vs foolbox 3's C&W-L2 and DDN run
    on the same JAX function (`foolbox.JAXModel`), on the same subset,
  * optionally (--profile) one solve at fixed c: jaxopt.LBFGSB vmapped vs the
    batched projected L-BFGS, in units of batched forward+backward passes.

Reports success, mean/median distortion (per-pixel RMS), images per second and
first-call compile time to experiments/results/bench_attack/.

Command:  nice -n 10 python experiments/bench_attack.py --profile
          (about 15 min on 2 CPU cores; --quick runs in about a minute).
Expected: 100% success; advjax mean distortion within 1.02× the reference's;
≥ 50× the reference's images per second; untargeted within 2% of min(C&W, DDN).
Model: runs/models/FC100-100-10 if present, else trained here for --train-epochs
with Adam on the 10k-image training set (recorded in config.json).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from advjax import _lbfgsb, attacks, checkpoint, data, models, train  # noqa: E402
from experiments import common  # noqa: E402

OUT = "experiments/results/bench_attack"


def train_quick(ds, epochs: int, seed: int = 0):
  """FC100-100-10 trained with Adam (used only when no checkpoint exists)."""
  m = models.get_model("FC100-100-10")
  cfg = train.TrainConfig(lr=1e-3, epochs=epochs, batch_size=100, seed=seed)
  return m, train.train(m, ds, cfg, progress=False).params


def timed(f, *a, **k):
  """(result, seconds), blocking on JAX arrays."""
  t = time.perf_counter()
  out = jax.block_until_ready(f(*a, **k))
  return out, time.perf_counter() - t


def stats(res, idx=slice(None)) -> dict:
  """Success rate and mean/median distortion over the given examples."""
  ok = np.asarray(res.success)[idx]
  d = np.asarray(res.distortion)[idx][ok]  # distortions of successes only
  l2 = np.asarray(res.l2)[idx][ok]
  nan = float("nan")
  return dict(n=int(ok.size), success=float(ok.mean()),
              mean=float(d.mean()) if d.size else nan,
              median=float(np.median(d)) if d.size else nan,
              mean_l2=float(l2.mean()) if l2.size else nan)


def run_advjax(fn, x, t, batch: int) -> tuple[attacks.AttackResult, dict]:
  """All images in fixed-size batches (last one padded); compile time separate."""
  n = len(x)
  pad = (-n) % batch
  xp = np.concatenate([x, x[:pad]]) if pad else x
  tp = np.concatenate([t, t[:pad]]) if pad else t
  _, first = timed(attacks.lbfgs, fn, xp[:batch], tp[:batch])
  _, again = timed(attacks.lbfgs, fn, xp[:batch], tp[:batch])
  parts, total = [], 0.
  for i in range(0, len(xp), batch):
    r, dt = timed(attacks.lbfgs, fn, xp[i:i + batch], tp[i:i + batch])
    parts.append(r)
    total += dt
  res = jax.tree_util.tree_map(lambda *a: np.concatenate(a)[:n], *parts)
  return res, dict(first_call_s=first, compile_s=first - again, seconds=total,
                   images_per_s=n / total, iterations_mean=float(res.iterations.mean()),
                   solves_mean=float(res.solves.mean()))


def run_foolbox(fn, x, y, steps: int, bsteps: int) -> dict:
  """foolbox 3 C&W-L2 and DDN (untargeted) on the same JAX function."""
  import foolbox as fb
  fm = fb.JAXModel(fn, bounds=(0, 1))
  out = {}
  for name, atk in [("C&W-L2", fb.attacks.L2CarliniWagnerAttack(
      binary_search_steps=bsteps, steps=steps)), ("DDN", fb.attacks.DDNAttack(steps=steps))]:
    (_, adv, ok), dt = timed(atk, fm, jnp.asarray(x), jnp.asarray(y), epsilons=None)
    adv = np.clip(np.asarray(adv), 0, 1)
    ok = np.asarray(jnp.argmax(fn(jnp.asarray(adv)), -1)) != y  # re-check
    d = np.sqrt(((adv - x).reshape(len(x), -1) ** 2).mean(1))
    out[name] = dict(n=len(x), success=float(ok.mean()), mean=float(d[ok].mean()),
                     median=float(np.median(d[ok])), seconds=dt,
                     images_per_s=len(x) / dt, distortion=d.tolist())
  return out


def profile(fn, x, t, iters: int) -> dict:
  """One solve at c = 1 from r = 0: jaxopt vmapped vs batched pqn, in f+g passes."""
  B, shape = x.shape[0], x.shape[1:]
  fun = attacks.penalty(fn, shape)
  xf = jnp.asarray(x).reshape(B, -1)
  c = jnp.ones(B)
  vg = jax.jit(jax.vmap(jax.value_and_grad(fun)))
  timed(vg, xf, xf, t, c)
  fg = min(timed(vg, xf, xf, t, c)[1] for _ in range(20))
  out = dict(batch=B, fg_pass_ms=fg * 1e3)
  opts = _lbfgsb.SolveOptions(maxiter=iters)
  done = jnp.zeros(B, bool)
  # Inputs are arguments, not closed-over constants: XLA would constant-fold
  # jaxopt's argsort over them for minutes.
  runs = {"pqn": jax.jit(lambda xf, t, c: _lbfgsb.pqn(
      lambda z: vg(z, xf, t, c), xf, done, 0., 1., opts))}
  for ls in ("backtracking", "zoom"):
    o = opts._replace(linesearch=ls)
    one = lambda z, l, cc, o=o: _lbfgsb.jaxopt_lbfgsb(fun, z, jnp.bool_(False),
                                                     (z, l, cc), 0., 1., o)
    runs[f"jaxopt-{ls}"] = jax.jit(lambda xf, t, c, one=one: jax.vmap(one)(xf, t, c))
  for name, f in runs.items():
    r, first = timed(f, xf, t, c)
    r, dt = timed(f, xf, t, c)
    out[name] = dict(compile_s=first - dt, seconds=dt, fg_passes=dt / fg,
                     iters_mean=float(r.iters.mean()), iters_max=int(r.iters.max()),
                     evals_mean=float(r.evals.mean()), evals_max=int(r.evals.max()),
                     f_mean=float(r.f.mean()))
  return out


def load_model(args, train_ds):
  """(logits_fn, model info) from the checkpoint, or a quickly trained model."""
  if os.path.exists(os.path.join(args.model_dir, checkpoint.META)):
    m, p, meta = checkpoint.load(args.model_dir)
    info = dict(source=args.model_dir, meta=meta)
  else:
    m, p = train_quick(train_ds, args.train_epochs)
    info = dict(source=f"trained in this script: Adam 1e-3, batch 100, "
                f"{args.train_epochs} epochs on the 10k training images")
  fn = jax.jit(lambda x: m.apply(p, x))
  return fn, info


def table(R: dict) -> str:
  """results.md: the comparison table."""
  rows = ["| attack | points | success | mean dist. | median dist. | images/s | "
          "first call (s) |", "| --- | --- | --- | --- | --- | --- | --- |"]
  def row(name, s, ips="", first=""):
    rows.append(f"| {name} | {s['n']} | {s['success']:.1%} | {s['mean']:.4f} | "
                f"{s['median']:.4f} | {ips} | {first} |")
  a = R["advjax"]
  row("advjax lbfgs (targeted)", a["all"], f"{a['images_per_s']:.1f}", f"{a['first_call_s']:.1f}")
  row("advjax lbfgs (targeted), subset", a["subset"], f"{a['images_per_s']:.1f}")
  row("scipy L-BFGS-B reference (targeted)", R["reference"], f"{R['reference']['images_per_s']:.2f}")
  u = R["untargeted"]
  row("advjax lbfgs untargeted (min over targets)", u["advjax"], f"{u['advjax']['images_per_s']:.1f}")
  for k, v in u.get("foolbox", {}).items():
    row(f"foolbox {k} (untargeted)", v, f"{v['images_per_s']:.2f}")
  rows += ["", "| ratio | value |", "| --- | --- |"]
  rows += [f"| {k} | {v:.4f} |" for k, v in R["ratios"].items()]
  return "\n".join(rows) + "\n"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model-dir", default="runs/models/FC100-100-10")
  ap.add_argument("--data-dir", default=os.environ.get("ADVJAX_DATA_DIR"))
  ap.add_argument("--n", type=int, default=512, help="images for advjax")
  ap.add_argument("--n-ref", type=int, default=30, help="images for scipy/foolbox")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--fb-steps", type=int, default=1000)
  ap.add_argument("--cw-binary-steps", type=int, default=9)
  ap.add_argument("--train-epochs", type=int, default=30)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--profile", action="store_true")
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--out", default=OUT)
  args = ap.parse_args(argv)
  if args.quick:
    args.n, args.n_ref, args.batch, args.fb_steps = 32, 3, 16, 50
    args.cw_binary_steps, args.train_epochs = 3, 2
  os.makedirs(args.out, exist_ok=True)
  train = data.load("mnist", "train", args.data_dir)
  test = data.load("mnist", "test", args.data_dir)
  fn, info = load_model(args, train)
  pred = np.asarray(jnp.argmax(fn(test.x), -1))
  idx = np.flatnonzero(pred == test.y)[:args.n]
  x, y = test.x[idx], test.y[idx]
  t = np.asarray(attacks.random_targets(jax.random.PRNGKey(args.seed), y, 10))
  R = dict(command=" ".join(sys.argv), code_version=checkpoint.code_version(),
           model=info, test_accuracy=float((pred == test.y).mean()),
           devices=str(jax.devices()), loadavg=os.getloadavg())
  res, a = run_advjax(fn, x, t, args.batch)
  a.update(all=stats(res), subset=stats(res, slice(args.n_ref)))
  R["advjax"] = a
  k = args.n_ref
  ref, dt = timed(attacks.lbfgs_reference, fn, x[:k], t[:k])
  R["reference"] = dict(stats(ref), seconds=dt, images_per_s=k / dt,
                        iterations_mean=float(ref.iterations.mean()),
                        per_example_ratio=(np.asarray(res.distortion[:k]) / ref.distortion).tolist())
  _, first = timed(attacks.lbfgs, fn, x[:k], label=y[:k])
  unt, dt = timed(attacks.lbfgs, fn, x[:k], label=y[:k])
  R["untargeted"] = dict(advjax=dict(stats(unt), seconds=dt, images_per_s=k / dt,
                                     first_call_s=first))
  R["untargeted"]["foolbox"] = run_foolbox(fn, x[:k], y[:k], args.fb_steps,
                                           args.cw_binary_steps)
  fbm = min(v["mean"] for v in R["untargeted"]["foolbox"].values())
  R["ratios"] = {
      "advjax/reference mean distortion (targeted, subset)":
          a["subset"]["mean"] / R["reference"]["mean"],
      "advjax/reference images per second": a["images_per_s"] / R["reference"]["images_per_s"],
      "advjax untargeted / best of C&W, DDN mean distortion": unt_mean / fbm
      if (unt_mean := R["untargeted"]["advjax"]["mean"]) else float("nan")}
  if args.profile:
    R["profile"] = profile(fn, x[:64], jnp.asarray(t[:64]), 100)
  R["loadavg_end"] = os.getloadavg()
  common.dump_json(os.path.join(args.out, "config.json"), vars(args))
  common.dump_json(os.path.join(args.out, "results.json"), R)
  checkpoint.atomic_write(os.path.join(args.out, "results.md"), (
      f"# L-BFGS attack benchmark\n\nModel: {info['source']}, test accuracy "
      f"{R['test_accuracy']:.2%}. Command: `{R['command']}`. Load average "
      f"{R['loadavg']} (2 shared CPU cores).\n\n" + table(R)).encode())
  print(table(R))
  return R


if __name__ == "__main__":
  main()
