"""advjax.convert: torchvision AlexNet state_dict → advjax logits match PyTorch."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from advjax import convert, models  # noqa: E402

TORCHVISION = dict(channels=(64, 192, 384, 256, 256), hidden=4096, classes=1000)
# The same geometry (224×224, kernels, strides, 6×6 last maps) at ~1/2000 of the
# weights: every layout difference the converter handles, without 61M params.
NARROW = dict(channels=(8, 16, 24, 16, 16), hidden=32, classes=10)


def shapes(channels, hidden, classes):
  """torchvision AlexNet's keys → weight shapes, for the given widths."""
  c, k = (3,) + tuple(channels), (11, 5, 3, 3, 3)
  convs = {f"features.{i}": (c[j + 1], c[j], k[j], k[j])
           for j, i in enumerate((0, 3, 6, 8, 10))}
  return {**convs, "classifier.1": (hidden, 36 * c[5]),
          "classifier.4": (hidden, hidden), "classifier.6": (classes, hidden)}


def random_state_dict(seed=0, widths=NARROW):
  """He-scaled random weights, so activations stay O(1) through the net."""
  g = torch.Generator().manual_seed(seed)
  sd = {}
  for k, s in shapes(**widths).items():
    fan_in = int(np.prod(s[1:]))
    sd[k + ".weight"] = torch.randn(s, generator=g) * (2 / fan_in) ** 0.5
    sd[k + ".bias"] = torch.randn(s[0], generator=g) * 0.1
  return sd


def narrow_model():
  return models.alexnet(torchvision=True, channels=NARROW["channels"],
                        hidden=NARROW["hidden"], num_classes=NARROW["classes"])


def torch_alexnet(sd, x):
  """torchvision's AlexNet forward (eval mode), functionally."""
  c = lambda x, k, s=1, p=0: F.conv2d(x, sd[k + ".weight"], sd[k + ".bias"], s, p)
  x = F.max_pool2d(F.relu(c(x, "features.0", 4, 2)), 3, 2)
  x = F.max_pool2d(F.relu(c(x, "features.3", 1, 2)), 3, 2)
  x = F.relu(c(x, "features.6", 1, 1))
  x = F.relu(c(x, "features.8", 1, 1))
  x = F.max_pool2d(F.relu(c(x, "features.10", 1, 1)), 3, 2)
  x = torch.flatten(F.adaptive_avg_pool2d(x, (6, 6)), 1)
  lin = lambda x, k: F.linear(x, sd[k + ".weight"], sd[k + ".bias"])
  x = F.relu(lin(x, "classifier.1"))
  x = F.relu(lin(x, "classifier.4"))
  return lin(x, "classifier.6")


def test_logits_match_torch(tmp_path):
  """A narrow torchvision-layout AlexNet at 224×224: the same code paths as
  the 61M-parameter one (whose shapes the next test converts)."""
  sd = random_state_dict()
  x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    want = torch_alexnet(sd, x).numpy()
  path = str(tmp_path / "alexnet.pth")
  torch.save({"state_dict": sd}, path)
  model, params = convert.load_alexnet(path, narrow_model())
  got = np.asarray(model.apply(params, x.numpy().transpose(0, 2, 3, 1)))
  scale = np.abs(want).max()
  assert scale > 0.1 and want.shape == (2, NARROW["classes"])  # not vacuous
  np.testing.assert_allclose(got, want, atol=2e-4 * scale, rtol=1e-4)
  # the same through an .npz, without torch on the reading side
  npz = str(tmp_path / "alexnet.npz")
  np.savez(npz, **{k: v.numpy() for k, v in sd.items()})
  np.testing.assert_array_equal(convert.load_alexnet(npz, narrow_model())[1]["fc1"]["kernel"],
                                params["fc1"]["kernel"])


def test_full_width_converts_to_the_named_models_shapes():
  sd = {}
  for k, s in shapes(**TORCHVISION).items():  # zeros: only the shapes matter here
    sd[k + ".weight"], sd[k + ".bias"] = np.zeros(s, np.float32), np.zeros(s[0], np.float32)
  params = convert.alexnet_from_torchvision(sd)
  template = jax.eval_shape(models.get_model("alexnet-torchvision").init,
                            jax.random.PRNGKey(0))
  assert jax.tree.map(np.shape, params) == jax.tree.map(lambda a: a.shape, template)
  assert models.num_params(params) == 61_100_840  # torchvision's count
  with pytest.raises(ValueError, match="not this model's weights"):
    convert.alexnet_from_torchvision(sd, "alexnet")  # the paper's 96-channel net


def test_bad_state_dicts():
  sd = {k: v.numpy() for k, v in random_state_dict().items()}
  with pytest.raises(ValueError, match="not this model's weights"):
    convert.alexnet_from_torchvision(sd)  # narrow weights, the full-width net
  del sd["classifier.6.bias"]
  with pytest.raises(ValueError, match="classifier.6"):
    convert.alexnet_from_torchvision(sd, narrow_model())
  with pytest.raises(FileNotFoundError):
    convert.load_state_dict("/nonexistent/alexnet.pth")


def test_missing_torch_names_the_extra(tmp_path, monkeypatch):
  """A core install (no torch) reading a .pth is told which extra to install."""
  path = tmp_path / "alexnet.pth"
  path.write_bytes(b"not read")
  monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import fails
  with pytest.raises(ImportError, match=r"advjax\[torch\].*whl/cpu"):
    convert.load_state_dict(str(path))
