"""DDN's public names where earlier advjax had them (`advjax.attack.ddn`)."""

from advjax.attack.ddn import DDNOptions, DDNResult, ddn, steps_lanes  # noqa: F401
