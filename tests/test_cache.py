"""An override never shares the committed run's adversarial-set cache."""

from experiments import common
from experiments.configs import table1, table2


def test_overrides_get_their_own_cache_and_table2_reuses_table1s():
  cfg = table1.get_config(False)
  base = common.cache_dir(cfg, "table1", 0, "FC100-100-10")
  for path, text in (("attack.maxiter", "50"), ("n_images", "200"), ("seed", "3"),
                     ("n_train", "1000")):
    other = common.override(cfg, path, text)
    assert common.cache_dir(other, "table1", 0, "FC100-100-10") != base, path
  assert common.cache_dir(common.override(cfg, "progress", "false"), "table1", 0,
                          "FC100-100-10") == base  # neutral fields change nothing
  assert common.cache_dir(table2.get_config(False), "table1", 0, "FC100-100-10") == base
