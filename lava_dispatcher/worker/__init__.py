"""The worker service: a daemon that owns a lab's devices, queues jobs and runs them.

Layers inside (each module has one job): ``config`` (settings), ``store``
(SQLite), ``logs`` (job logs and their line index), ``auth`` (users,
tokens), ``definitions`` (what scheduling reads from a job, MultiNode
splitting), ``validator`` (the dispatcher's own checks, in a child),
``procs`` (job processes), ``runner`` (one ``lava-dispatch run`` per job),
``scheduler`` (queue to devices, device health), ``service`` (the API that
XML-RPC and REST call), ``http`` (the listener), ``events`` and
``zmq_publisher`` (event notifications), ``daemon`` (start-up, ready, stop),
``systemd`` (sd_notify, the unit), ``logging_setup`` (journald's format),
``checkconfig`` (``--check-config``) and ``cli``. The worker never imports the dispatcher's actions
or pipeline: jobs run in child processes. See docs/worker.md.
"""
