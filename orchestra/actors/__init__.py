"""The actors (DESIGN §1), one module each: Admission, the Queue (its run loop, its face and
its messages), StreamSession, the attached and the owning ReplicaSupervisor, PoolControl.
Each has ``run(task_status=...)`` where it runs under the service's nursery, a docstring
saying what it owns, what it receives and what it promises under cancellation, and a
``statistics()`` snapshot."""
