"""grpc-shop: three grpc.aio services that show and measure gRPC load balancing."""

__version__ = "0.1.0"
