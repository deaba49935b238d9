"""The audit service: audits as jobs in the store, run by workers (local processes or a Ray cluster).

* ``trustaudit worker`` (:class:`Worker`) claims queued jobs and runs each in a child process with
  a time and memory limit, heartbeating, recording progress and the report (``worker.py``).
* :class:`LocalWorkers` starts n workers on this machine, tied to the starting process's life
  (``trustaudit serve`` and ``trustaudit dashboard`` use it unless ``--no-worker``).
* How a job runs and what its ``inputs`` look like: ``_jobs.py`` (:func:`stage_inputs` writes a
  job folder and returns the ``inputs`` to submit).
"""

from audit.service._jobs import AUDIT_ROLES, InputFile, remove_job_folder, stage_inputs
from audit.service.worker import OUTCOMES, LocalWorkers, Worker, WorkerOptions, default_jobs_dir

__all__ = [
    "AUDIT_ROLES",
    "OUTCOMES",
    "InputFile",
    "LocalWorkers",
    "Worker",
    "WorkerOptions",
    "default_jobs_dir",
    "remove_job_folder",
    "stage_inputs",
]
