"""Every Markdown table of the experiments: `markdown(results, cfg) -> str` each.

Numbers over seeds print as mean ± sd (n seeds); one seed prints its value
and says n=1.
"""

from __future__ import annotations


def stat(s: dict, pct: bool = False, digits: int | None = None) -> str:
  """'3.93 ± 0.12%' for a `common.summarize` dict (one seed: '3.93% (n=1)')."""
  k, d = (100.0, "%") if pct else (1.0, "")
  digits = (2 if pct else 4) if digits is None else digits
  m = f"{k * s['mean']:.{digits}f}"
  if s["n"] == 1:
    return f"{m}{d}"
  return f"{m} ± {k * s['sd']:.{digits}f}{d}"


def seeds_note(n: int) -> str:
  return (f"\nn = {n} training seed(s)" + ("; values are mean ± sd over seeds, "
          "per-seed values in results.json.\n" if n > 1 else " (no spread).\n"))


def train_models(res: dict, cfg) -> str:
  """Errors (%) per model, ours beside the paper's."""
  from experiments.configs.train_models import PAPER  # pylint: disable=import-outside-toplevel
  out = ["| model | trained on | ours: error per set | paper |",
         "| --- | --- | --- | --- |"]
  for folder, s in res["summary"].items():
    half = next(r["half"] for r in res["rows"] if r["folder"] == folder)
    ours = " / ".join(f"{'train' if k == 'all' else k} {stat(s['err_' + k], True)}"
                      for k in ("all", "P1", "P2", "test") if "err_" + k in s)
    paper = PAPER.get(folder, {}) if cfg.dataset == "mnist" else {}  # MNIST's only
    p = " / ".join(f"{k} {v}%" for k, v in paper.items()) or "–"
    out.append(f"| {folder} | {half} | {ours} | {p} |")
  return "\n".join(out) + "\n" + seeds_note(len(res["seeds"]))


def table1(res: dict, cfg) -> str:
  """Ours beside the paper's Table 1."""
  from experiments.configs.table1 import PAPER  # pylint: disable=import-outside-toplevel
  out = ["| model | train err | test err | av. min distortion | success | "
         "paper: train / test / distortion |", "| --- " * 6 + "|"]
  for m, s in res["summary"].items():
    p = PAPER.get(m, ("–",) * 3)
    out.append(f"| {m} | {stat(s['train_err'], True)} | {stat(s['test_err'], True)} | "
               f"{stat(s['mean_distortion'])} | {stat(s['success'], True, 1)} | "
               f"{p[0]}% / {p[1]}% / {p[2]} |")
  return "\n".join(out) + "\n" + seeds_note(len(res["seeds"]))


def matrix(m: dict, paper: dict | None = None, extra: dict | None = None) -> str:
  """Error matrix (%) of summarized cells, 'ours (paper)' where the paper has one."""
  cols = list(next(iter(m.values())))
  head = "| examples ↓ / model → | " + " | ".join(cols) + (" | av. distortion |" if extra else " |")
  lines = [head, "| --- " * (len(cols) + 1 + bool(extra)) + "|"]
  for row, vals in m.items():
    cells = []
    for c in cols:
      p = (paper or {}).get(row, {}).get(c)
      cells.append(stat(vals[c], True, 1) + (f" ({p}%)" if p is not None else ""))
    tail = f" | {extra[row]}" if extra else ""
    lines.append(f"| {row} | " + " | ".join(cells) + tail + " |")
  return "\n".join(lines) + "\n"


def table2(res: dict, cfg) -> str:
  """Table 2 and each column model's clean error on each row's base images."""
  from experiments.configs.table2 import PAPER  # pylint: disable=import-outside-toplevel
  dist = {k: stat(v) for k, v in res["distortion"].items()}
  return (matrix(res["matrix"], PAPER, dist) + "\nCells: ours (paper). Clean error "
          "of each column model on each row's base images (before the attack):\n\n"
          + matrix(res["clean"]) + seeds_note(len(res["seeds"])))


def table34(res: dict, cfg) -> str:
  """Table 3 rows and the Table 4 matrix."""
  from experiments.configs.table34 import LABELS, PAPER3, PAPER4  # pylint: disable=import-outside-toplevel
  out = ["| model | err P1 | err P2 | err test | min av. distortion | "
         "paper: P1 / P2 / test / distortion |", "| --- " * 6 + "|"]
  for m, s in res["summary3"].items():
    p = PAPER3[m]
    out.append(f"| {LABELS[m]} (on {m[:2]}) | {stat(s['P1'], True)} | "
               f"{stat(s['P2'], True)} | {stat(s['test'], True)} | "
               f"{stat(s['distortion'])} | {p[0]}% / {p[1]}% / {p[2]}% / {p[3]} |")
  dist = {k: stat(v) for k, v in res["distortion"].items()}
  return ("## Table 3\n\n" + "\n".join(out) + "\n\n## Table 4 (cells: ours (paper))\n\n"
          + matrix(res["table4"], PAPER4, dist) + "\nAmplified distortions are below "
          "0.1 where clipping to [0,1] cuts the rescaled perturbation.\n"
          + seeds_note(len(res["seeds"])))


def figures(res: dict, cfg) -> str:
  """Success, distortion and the error of noise at the same distortion."""
  out = ["| model | success | mean distortion | error of Gaussian noise at the "
         "same distortion |", "| --- " * 4 + "|"]
  out += [f"| {n} | {100 * v['success']:.1f}% ({v['n']}) | {v['mean_distortion']:.4f} "
          f"| {100 * v['noise_error_same_distortion']:.1f}% |"
          for n, v in res["models"].items()]
  return "\n".join(out) + "\n"


def adv_training(res: dict, cfg) -> str:
  """Variants: test error, minimum distortion, success, train time (mean ± sd)."""
  out = [f"| {res.get('model', 'FC100-100-10')} trained with | test error | "
         "av. min distortion | attack success | train s |", "| --- " * 5 + "|"]
  for v, s in res["summary"].items():
    out.append(f"| {v} | {stat(s['test_err'], True)} | {stat(s['mean_distortion'])} "
               f"| {stat(s['success'], True, 0)} | {stat(s['train_seconds'], digits=0)} |")
  return ("\n".join(out) + "\n" + seeds_note(len(res["seeds"])) +
          "\nPaper (60k training images): weight decay 1.6%, dropout ≈1.3%, "
          "adversarial pool < 1.2%.\n")


def adv_search(res: dict, cfg) -> str:
  """One row per finished cell of the search, in the config's order."""
  out = ["| cell | what it varies | test error | av. min distortion | train s |",
         "| --- " * 5 + "|"]
  for c in res["cells"]:
    out.append(f"| {c['cell']} | {c['note']} | {100 * c['test_err']:.2f}% | "
               f"{c['mean_distortion']:.4f} | {c['train_seconds']:.0f} |")
  return "\n".join(out) + f"\n\n{len(res['cells'])} of {res['n_cells']} cells done.\n"


def reproduce(res: dict, cfg) -> str:
  """Per-step status, wall seconds and peak RSS."""
  out = ["| step | status | wall s | peak RSS (MiB) |", "| --- " * 4 + "|"]
  for s in res["steps"]:
    out.append(f"| {s['step']} | {s['status']} | {s.get('wall_seconds', '–')} | "
               f"{s.get('peak_rss_mib', '–')} |")
  return ("\n".join(out) + f"\n\nTotal wall: {res['wall_seconds']} s. Separate "
          "scripts, not run here: " + ", ".join(res["separate"]) + ".\n")


def bench_attack(res: dict, cfg) -> str:
  """The attack benchmark's device report: one table per workload, then ratios."""
  del cfg
  head = (f"Device: {res['device']} ({res['backend']}), jax {res['jax']}, load average "
          f"{[round(v, 1) for v in res['loadavg_start']]} at the start. Times are "
          "seconds in this one process; warm = everything compiled.\n")
  out = [head]
  for w, r in res["workloads"].items():
    out += [f"### {w}\n", "| attack | n | success | mean RMS | first call s | warm s | "
            "images/s | passes per example | in box |", "| --- " * 9 + "|"]
    for name, v in r["rows"].items():
      rms = f"{v['mean_rms']:.5f}" if v.get("mean_rms") is not None else "–"
      first = f"{v['first_call_s']:.2f}" if v.get("first_call_s") is not None else "–"
      passes = (f"{v['passes_per_example']:.0f}" if v.get("passes_per_example") is not None
                else "–")
      out.append(f"| {name} | {v['n']} | {100 * v['success']:.1f}% | {rms} | {first} | "
                 f"{v['warm_s']:.3f} | {v['images_per_s']:.1f} | {passes} | {v['in_box']} |")
    out += ["", "| ratio | value |", "| --- | --- |"]
    out += [f"| {k} | {v:.3f} |" for k, v in r["ratios"].items()]
    out.append("")
  return "\n".join(out) + "\n"
