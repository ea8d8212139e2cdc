"""ponder: test-time search for small language models, guided by a process reward model."""

__version__ = "0.1.0"
