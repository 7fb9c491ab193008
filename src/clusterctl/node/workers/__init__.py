"""The worker slots: ``pool`` (tasks queued, handed to slots, answered, cancelled),
``forks`` (the forked processes the slots and spawned processes run in, killed and
reaped without the loop waiting), ``worker`` (what runs in a slot's process: a task's
call or map, its outcome), and ``tracing`` (the tasks' events, when a controller
records)."""
