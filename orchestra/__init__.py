"""orchestra: a single-host LLM orchestrator on Trio."""

__version__ = "0.1.0"
API_VERSION = "1.1.0"
