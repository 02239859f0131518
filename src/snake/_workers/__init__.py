"""Workers: where ``par_map`` runs its function.

- ``backend``: the small interface ``ParMap`` schedules against, and ``apply``.
- ``thread``: the thread backend.
- ``process``: the process backend (shared-memory transport, progress slots).
- ``procs``: worker processes, the launcher's client and the process-wide cache.
- ``launcher``, ``child``, ``wire``: code that runs in the launcher and the workers
  (no trio there).
- ``pool``: ``WorkerPool`` and ``worker_type``.
"""
