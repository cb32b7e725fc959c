"""The engine layer: what the actors need from an engine (:mod:`.protocol`), the llama.cpp
adapter (:mod:`.llamacpp`) and the adapter for OpenAI-compatible servers
(:mod:`.openai_compat`), the only modules that see httpx, one llama-server process
(:mod:`.process`), what is serving (:mod:`.identity`), and ``orchestra engine install`` with
its cache (:mod:`.install`, :mod:`.cache`)."""
