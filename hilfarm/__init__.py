"""hilfarm: a hardware-in-the-loop benchmarking farm for ONNX and TFLite models."""

__version__ = "0.1.0"
