"""hilfarm: a hardware-in-the-loop benchmarking farm for ONNX and TFLite models."""

import os

__version__ = "0.1.0"

# hilfarm's processes fork only to exec at once (subprocess: the agent's benchmark children, the
# farm `hilfarm up` starts, pexpect in the tests). gRPC's fork handlers exist for a fork *without*
# exec, and in grpcio 1.8x a fork made while a channel shuts down waits in them forever (seen: a
# test process stuck in forkpty inside gRPC's pre-fork handler). So they are off, before grpc is
# first imported, unless whoever started the process chose otherwise.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
