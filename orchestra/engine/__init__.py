"""The engine layer: what the actors need from an engine (:mod:`.protocol`), the llama.cpp
adapter (:mod:`.llamacpp`, the only module that sees httpx), one llama-server process
(:mod:`.process`), what is serving (:mod:`.identity`), and ``orchestra engine install`` with
its cache (:mod:`.install`, :mod:`.cache`)."""
