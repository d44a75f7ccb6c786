"""The driver's public names where earlier advjax had them (`advjax.runs.driver`)."""

from advjax.runs.driver import (PROGRESS, Job, ResumeError, collect, execute,  # noqa: F401
                                is_complete, job_identity, run, save)
