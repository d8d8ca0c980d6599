"""`python -m straightline_common.healthcheck HOST:PORT [SERVICE]`: exits 0 when the gRPC
health service there answers SERVING, 1 otherwise (a container's health check)."""

import sys

import grpc
from grpc_health.v1 import health_pb2

from straightline_common.processes import health_status


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        status = health_status(*argv)
    except grpc.RpcError as error:
        print(f"{argv[0]}: {error.code().name} {error.details()}", file=sys.stderr)
        return 1
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
