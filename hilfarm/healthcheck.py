"""`python -m hilfarm.healthcheck [HOST:PORT]`: exit 0 when the controller's gRPC health service
answers SERVING, 1 otherwise (a container HEALTHCHECK, a monitoring probe).

Plaintext by default (the check runs beside the controller); with TLS set up the usual way
(HILFARM_TLS_CA, and HILFARM_TLS_SERVER_NAME when the certificate does not name HOST) it
verifies the controller's certificate as any client does. Health needs no token.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hilfarm.transport import ClientTls, open_channel


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    address = args[0] if args else os.environ.get("HILFARM_CONTROLLER", "127.0.0.1:50051")
    options = []
    server_name = os.environ.get("HILFARM_TLS_SERVER_NAME")
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    try:
        with open_channel(address, ClientTls.resolve(), options) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    except (grpc.RpcError, ValueError) as exc:
        print(f"controller at {address} is not healthy: {exc}", file=sys.stderr)
        return 1
    if status != health_pb2.HealthCheckResponse.SERVING:
        print(f"controller at {address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
