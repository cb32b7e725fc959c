"""Observation: JSON Lines logs (:mod:`.logs`) and Prometheus metrics (:mod:`.metrics`)."""
