"""Per-example jobs at scale.

* `jobs`: the `Job` record and the registry of jobs (the §4.1 attack, DDN, the
  certified radii, a user's own: `jobs.register`);
* `driver`: runs any job over a dataset split: fixed-size batches (the last
  one padded with copies of its last row, `advjax.batching.pad`, so that a
  job compiles once), sharded over all devices and processes, resumable,
  written part by part;
* `identity`: what names a run (so that a refusal says what differs); records
  of older advjax migrated;
* `store`: the folder's one lock and its part files;
* `multihost`: processes agree on the job, and stop together.

Each module is imported on first use (`advjax.runs.driver` after
`import advjax`).
"""

import importlib

SUBMODULES = ("driver", "identity", "jobs", "multihost", "store")


def __getattr__(name: str):
  if name in SUBMODULES:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
