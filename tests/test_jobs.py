"""The job registry (a user's job in one file through the engine and the CLI),
one name per public thing (deprecated aliases warn), and no import cycles."""

import ast
import importlib
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import advjax
from advjax import checkpoint, cli, criteria, data, inputs
from advjax.runs import driver, jobs

ROOT = pathlib.Path(advjax.__file__).parent


@pytest.fixture
def toy():
  """The toy job module (tests/toy_job.py), registered for this test only."""
  sys.modules.pop("toy_job", None)
  mod = importlib.import_module("toy_job")
  yield mod
  jobs.unregister("noise")
  sys.modules.pop("toy_job", None)


def test_builtin_jobs_are_registered_under_their_commands():
  assert list(jobs.registered("attack")) == ["lbfgs", "ddn"]
  assert set(jobs.registered("certify")) == {"lipschitz", "ibp", "crown", "alpha-crown",
                                             "exact"}
  with pytest.raises(ValueError, match="registered already"):
    jobs.register(jobs.get("ddn"))
  with pytest.raises(ValueError, match="no job named 'nope'; registered: lbfgs, ddn"):
    jobs.get("nope")


def test_every_builder_has_one_shape():
  for name, m in jobs.registered().items():
    job = m.make(m.options(), targeted=m.command == "attack", untargeted="all", key=None)
    assert isinstance(job, jobs.Job) and job.fields, name


@pytest.mark.slow
def test_toy_job_runs_through_the_engine_and_the_cli(tmp_path, cli_job, toy, capsys):
  argv = [a for a in cli_job if a not in ("--bisect-steps", "3")]
  out = str(tmp_path / "noise.npz")
  assert cli.main(argv + ["--import", "toy_job", "--method", "noise", "--noise-l2", "3",
                          "--output", out]) == 0
  z = np.load(out)
  assert '"method": "noise"' in capsys.readouterr().out
  # the same job through the engine directly, on the same examples and targets
  model, params, _ = checkpoint.load(argv[argv.index("--checkpoint") + 1])
  ds = data.load("mnist", "test", argv[argv.index("--data-dir") + 1])
  pb = inputs.problem((model.apply, params), ds.x, target=z["target"], label=ds.y)
  res = driver.execute(toy.noise(toy.NoiseOptions(l2=3.0)), pb, str(tmp_path / "direct"),
                       batch_size=4, progress=False)
  for k in ("x_adv", "success", "distortion", "index", "label"):
    np.testing.assert_array_equal(res[k], z[k], err_msg=k)
  assert np.all(res["distortion"] <= 3.0 / 28 + 1e-6) and res["distortion"].min() > 0
  pred = np.asarray(model.apply(params, res["x_adv"])).argmax(-1)
  np.testing.assert_array_equal(res["success"], pred == z["target"])


def test_toy_job_flags_and_errors_come_from_its_options(tmp_path, cli_job, toy, capsys):
  argv = cli_job + ["--import", "toy_job", "--method", "noise", "--output",
                    str(tmp_path / "n.npz")]
  assert cli.main(argv + ["--noise-l2", "-1"]) == 2
  assert capsys.readouterr().err.strip().endswith("--noise-l2 -1.0: must be > 0.")
  helptext = cli._parser().format_help() + cli._parser()._subparsers._group_actions[
      0].choices["attack"].format_help()  # pylint: disable=protected-access
  assert "--noise-l2" in helptext and "NoiseOptions (--method noise)" in helptext


def test_import_of_a_py_file_and_a_missing_module(tmp_path, cli_job, capsys):
  argv = cli_job + ["--method", "noise", "--output", str(tmp_path / "n.npz")]
  with pytest.raises(SystemExit):  # without --import, 'noise' is no choice
    cli.main(argv)
  assert "invalid choice: 'noise'" in capsys.readouterr().err
  path = str(pathlib.Path(__file__).with_name("toy_job.py"))
  try:
    cli._import_jobs(["attack", "--import", path])  # pylint: disable=protected-access
    assert "noise" in jobs.registered("attack")
  finally:
    jobs.unregister("noise")
  assert cli.main(cli_job + ["--import", "no_such_module_xyz", "--output",
                             str(tmp_path / "a.npz")]) == 2
  assert "no_such_module_xyz" in capsys.readouterr().err


def _imports(path: pathlib.Path, package: str) -> set[str]:
  """The advjax modules a module imports (anywhere in it, also inside functions)."""
  tree, out = ast.parse(path.read_text()), set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      base = node.module if node.level == 0 else ".".join(
          package.split(".")[:len(package.split(".")) - node.level + 1] + [node.module])
      out |= {f"{base}.{a.name}" for a in node.names} | {base}
  return {m for m in out if m.startswith("advjax")}


def _graph() -> dict[str, set[str]]:
  """advjax's module import graph: module -> the advjax modules it imports."""
  files = {}
  for p in ROOT.rglob("*.py"):
    parts = p.relative_to(ROOT.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    files[name] = p
  graph = {}
  for name, p in files.items():
    pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
    deps = {m for m in _imports(p, pkg) if m in files}
    # a submodule reaching its own package's __init__ for a sibling is not an edge back
    graph[name] = {m for m in deps if not (name.startswith(m + ".") and m != "advjax")}
  return graph


def _cycles(graph) -> list[list[str]]:
  """Every import cycle (a strongly connected component of more than one module)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_no_import_cycles():
  graph = _graph()
  assert "advjax.runs.jobs" in graph["advjax.runs.driver"]  # the scan sees imports
  assert not _cycles(graph)
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_reads_another_modules_private_names():
  modules = set(_graph())
  found = []
  for p in ROOT.rglob("*.py"):
    tree, names = ast.parse(p.read_text()), {}
    for node in ast.walk(tree):  # local name -> the advjax module it names
      if isinstance(node, ast.ImportFrom) and node.module in modules | {"advjax"}:
        names.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
      elif isinstance(node, ast.Import):
        names.update({a.asname: a.name for a in node.names if a.asname})
    names = {k: v for k, v in names.items() if v in modules}
    found += [f"{p.name}:{n.lineno} {n.value.id}.{n.attr}" for n in ast.walk(tree)
              if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
              and n.value.id in names and n.attr.startswith("_")
              and not n.attr.startswith("__")]
  assert not found, found


@pytest.mark.slow
def test_each_runs_module_imports_alone_in_a_fresh_interpreter():
  for m in ("advjax.runs.jobs", "advjax.runs.driver", "advjax.runs.identity",
            "advjax.runs.store", "advjax.runs.multihost"):
    out = subprocess.run([sys.executable, "-c", f"import {m}"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT.parent)
    assert out.returncode == 0, m + out.stderr


@pytest.mark.parametrize("old, new, name", [
    ("advjax.attacks", "advjax.attack", "lbfgs"),
    ("advjax.attacks", "advjax.attack", "AttackOptions"),
    ("advjax.ddn", "advjax.attack.ddn", "ddn"),
    ("advjax.driver", "advjax.runs.driver", "execute"),
    ("advjax.driver", "advjax.runs.identity", "job_identity"),
    ("advjax.spectral", "advjax.norms.spectral", "conv_norm"),
    ("advjax.certificates", "advjax.norms.upper_bounds", "gram_upper"),
    ("advjax.convgeom", "advjax.norms.conv_geometry", "conv_fn"),
    ("advjax.lipschitz", "advjax.norms.layers", "layer_bounds"),
    ("advjax.regularise", "advjax.norms.regulariser", "RegConfig"),
])
def test_old_names_warn_and_give_the_same_objects(old, new, name):
  mod = importlib.import_module(old)
  with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated.*use {new}\.{name}"):
    value = getattr(mod, name)
  assert value is getattr(importlib.import_module(new), name)
  with pytest.raises(AttributeError):
    mod.no_such_name  # pylint: disable=pointless-statement
  assert name in dir(mod)


@pytest.mark.slow
def test_import_advjax_reaches_the_subpackages_lazily():
  code = ("import sys, advjax; assert 'advjax.certify' not in sys.modules; "
          "assert 'jax' not in sys.modules; "
          "f = advjax.certify.radius; g = advjax.attack.lbfgs; h = advjax.runs.driver; "
          "assert advjax.norms.layers.layer_bounds and 'lbfgs' in advjax.runs.jobs.registered(); "
          "assert callable(f) and callable(g); print('LAZY-OK')")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=ROOT.parent)
  assert "LAZY-OK" in out.stdout, out.stderr
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    advjax.nope  # pylint: disable=pointless-statement


@pytest.mark.slow
def test_the_library_uses_no_deprecated_name():
  # in a fresh interpreter: reloading here would give later tests new classes
  code = ("import warnings; warnings.simplefilter('error', DeprecationWarning); "
          "import advjax.cli, advjax.protocol, advjax.advtrain, advjax.runs.jobs; "
          "print('NO-DEPRECATED-OK')")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=ROOT.parent)
  assert "NO-DEPRECATED-OK" in out.stdout, out.stderr
  old = {"advjax.attacks", "advjax.ddn", "advjax.driver", "advjax.spectral",
         "advjax.certificates", "advjax.convgeom", "advjax.lipschitz", "advjax.regularise"}
  for name, deps in _graph().items():
    assert not deps & old, (name, deps & old)
  assert criteria.rms  # the toy job's distortion is criteria's (imported above)
