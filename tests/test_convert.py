"""advjax.convert: torchvision AlexNet state_dict → advjax logits match PyTorch."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from advjax import convert  # noqa: E402

SHAPES = {  # torchvision AlexNet: key → weight shape
    "features.0": (64, 3, 11, 11), "features.3": (192, 64, 5, 5),
    "features.6": (384, 192, 3, 3), "features.8": (256, 384, 3, 3),
    "features.10": (256, 256, 3, 3), "classifier.1": (4096, 9216),
    "classifier.4": (4096, 4096), "classifier.6": (1000, 4096)}


def random_state_dict(seed=0):
  """He-scaled random weights, so activations stay O(1) through the net."""
  g = torch.Generator().manual_seed(seed)
  sd = {}
  for k, s in SHAPES.items():
    fan_in = int(np.prod(s[1:]))
    sd[k + ".weight"] = torch.randn(s, generator=g) * (2 / fan_in) ** 0.5
    sd[k + ".bias"] = torch.randn(s[0], generator=g) * 0.1
  return sd


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
  sd = random_state_dict()
  x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    want = torch_alexnet(sd, x).numpy()
  path = str(tmp_path / "alexnet.pth")
  torch.save({"state_dict": sd}, path)
  model, params = convert.load_alexnet(path)
  got = np.asarray(model.apply(params, x.numpy().transpose(0, 2, 3, 1)))
  scale = np.abs(want).max()
  assert scale > 0.1  # the test is not vacuous
  np.testing.assert_allclose(got, want, atol=2e-4 * scale, rtol=1e-4)
  # the same through an .npz, without torch on the reading side
  npz = str(tmp_path / "alexnet.npz")
  np.savez(npz, **{k: v.numpy() for k, v in sd.items()})
  np.testing.assert_array_equal(convert.load_alexnet(npz)[1]["fc1"]["kernel"],
                                params["fc1"]["kernel"])


def test_bad_state_dicts():
  sd = {k: v.numpy() for k, v in random_state_dict().items()}
  with pytest.raises(ValueError, match="not this model's weights"):
    convert.alexnet_from_torchvision(sd, "alexnet")  # 96-channel variant
  del sd["classifier.6.bias"]
  with pytest.raises(ValueError, match="classifier.6"):
    convert.alexnet_from_torchvision(sd)
  with pytest.raises(FileNotFoundError):
    convert.load_state_dict("/nonexistent/alexnet.pth")


def test_missing_torch_names_the_extra(tmp_path, monkeypatch):
  """A core install (no torch) reading a .pth is told which extra to install."""
  path = tmp_path / "alexnet.pth"
  path.write_bytes(b"not read")
  monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import fails
  with pytest.raises(ImportError, match=r"advjax\[torch\].*whl/cpu"):
    convert.load_state_dict(str(path))
