"""The balancing lab: every Kubernetes networking piece a gRPC call crosses, as a real
local counterpart, so each balancing mode can be run and measured on one machine.

- ``endpoints``: readiness of replicas -> endpoint sets (what EndpointSlices do)
- ``dns``: a cluster DNS answering ``<svc>.shop.svc.cluster.local`` (headless Services)
- ``haproxy``: an L4 proxy at a service IP (kube-proxy) and L7 HTTP/2 sidecars (Envoy)
- ``xds``: an ADS control plane for ``xds:///`` clients (istiod for proxyless gRPC)
"""
