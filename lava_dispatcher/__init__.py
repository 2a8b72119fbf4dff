"""lava_dispatcher: a LAVA-compatible test-lab dispatcher."""

__version__ = "0.1.0"
