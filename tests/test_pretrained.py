"""The committed trained nets (`advjax.models.pretrained`, issue 29): each
loads with its checksum, takes (B, 28, 28, 1) inputs in [0, 1], and gives the
figures its meta.json publishes when they are recomputed here."""

import json
import os

import numpy as np
import pytest

from advjax import certify, data, models


def _meta(name):
  folder = os.path.join(os.path.dirname(models.__file__), "pretrained", name)
  with open(os.path.join(folder, "meta.json")) as f:
    return json.load(f)


@pytest.mark.parametrize("name", models.PRETRAINED)
def test_each_pretrained_net_loads_and_runs(name):
  model, params = models.pretrained(name)
  z = np.asarray(model.apply(params, np.zeros((2, 28, 28, 1), np.float32)))
  assert z.shape == (2, 10) and np.all(np.isfinite(z))
  assert _meta(name)["pretrained"]["name"] == name


def test_an_unknown_name_is_refused_with_the_names():
  with pytest.raises(ValueError, match="lmt-wong-small"):
    models.pretrained("no-such-net")


@pytest.mark.slow  # certifies 500 images
@pytest.mark.parametrize("name", models.PRETRAINED)
def test_the_published_figures_recomputed(name, mnist_dir):
  """Clean accuracy on the 10,000 test images and the certified accuracy at
  each ε (the Lipschitz certificate on the first n_images, 500 unless meta.json
  says) as meta.json says (to one image: a radius within rounding of an ε may
  fall either side)."""
  model, params = models.pretrained(name)
  te = data.load("mnist", "test", mnist_dir)
  pub = _meta(name)["pretrained"]
  meas, n = pub["measured"], pub.get("n_images", 500)
  pred = np.asarray(models.predict(model, params, te.x))
  assert abs(np.mean(pred == te.y) - meas["clean_acc"]) <= 1e-4
  x, y = te.x[:n], te.y[:n].astype(np.int32)
  rho = np.asarray(certify.radius((model.apply, params), x, y, method="lipschitz").l2)
  for e in (0.5, 1.0, 1.58, 2.0):
    got = np.mean((pred[:n] == y) & (rho >= e))
    assert abs(got - meas[f"certified@{e}"]) <= 1 / n + 1e-9, (e, got)
