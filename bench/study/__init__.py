"""The accuracy study (``python -m bench.accuracy``), as a package:

- ``runs``: the protocol (tasks, metrics, floors), the ``Run`` record and its key, the
  one TrainConfig a run trains with, and the record a finished run appends;
- ``records``: the results file (JSON lines), read and appended;
- ``choices``: what the searches chose (each pilot's lr, full's missed floors);
- ``plans``: the table of plan functions, each with the plans it depends on;
- ``runner``: one process or N workers, lock files, resume, stale-lock takeover;
- ``stats`` and ``report``: mean ± sd, paired differences with t-intervals, the tables;
- ``evidence``: which study choice each default of polyhead/trainer/table.py follows.
"""
