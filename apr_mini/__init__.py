"""apr-mini: Adaptive Parallel Reasoning on Countdown, small enough to read and run on a laptop."""
__version__ = "0.1.0"
