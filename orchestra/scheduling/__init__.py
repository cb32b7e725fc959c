"""The Queue's policies as pure helpers, driven by unit tests without an event loop: the
waiting line, admission checks, cuts, preemption, the running set, estimates and figures,
sessions, progress frames, and the Queue's record of a task."""
