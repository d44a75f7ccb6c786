"""The README's library examples run as written (model kinds, normalised model, box)."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "README.md")


def _blocks(section: str) -> list[str]:
  """The ```python blocks of one README section (up to the next heading)."""
  text = open(README).read()
  start = text.index(section)
  end = text.find("\n#", start + len(section))
  return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


@pytest.mark.slow
@pytest.mark.parametrize("i", [0, 1])
def test_any_model_any_box_examples_run(i):
  blocks = _blocks("### Any JAX model, any box")
  assert len(blocks) == 2
  exec(compile(blocks[i], f"README block {i}", "exec"), {})  # pylint: disable=exec-used


@pytest.mark.slow
def test_certify_example_runs():
  blocks = _blocks("### Certified radii: the lower end of the bracket")
  assert len(blocks) == 1
  exec(compile(blocks[0], "README certify block", "exec"), {})  # pylint: disable=exec-used
