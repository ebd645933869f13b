"""gateway: an OpenAI-compatible stateful proxy that remembers conversations."""

__version__ = "0.1.0"
