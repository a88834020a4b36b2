"""The Echo service: one hop that does no work, so a benchmark measures gRPC itself.

Two ways to run it (``python -m shop.echo --help``): on the shared runtime like
every shop service, or ``--bare`` as a plain ``grpc.aio`` server. The difference
between the two is what the runtime (interceptors, metrics, tracing) costs per call.
A bare server can also pass each call on to another (``--bare --forward HOST:PORT``):
three in a row are the floor of a three-hop chain, gRPC's own cost for the shop's.
"""
