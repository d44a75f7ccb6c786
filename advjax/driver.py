"""Deprecated (one release): the engine is `advjax.runs.driver` (a run's
identity `advjax.runs.identity`)."""

from advjax import moved

__getattr__, __dir__ = moved.alias(__name__, "advjax.runs.driver",
                                   job_identity="advjax.runs.identity")
