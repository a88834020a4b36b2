"""The balancing lab: every Kubernetes networking piece a gRPC call crosses, as a real
local counterpart, so each balancing mode can be run and measured on one machine.

The counterparts:

- ``endpoints``: readiness of replicas -> endpoint sets (what EndpointSlices do)
- ``dns``: a cluster DNS answering ``<svc>.shop.svc.cluster.local`` (headless Services)
- ``haproxy``: an L4 proxy at a service IP (kube-proxy)
- ``envoy``: real Envoy sidecars, configured over ADS by ``xds`` (Istio's data plane)
- ``xds``: an ADS control plane (istiod) for ``xds:///`` clients and the Envoy sidecars

The lab itself:

- ``modes``: the balancing modes, one module each, and the registry of their names
- ``runner``: runs one mode end to end; ``load``: the ``shop load`` process it drives
- ``analysis``: the figures read off a load timeline
- ``results``: what a run measured, as typed records and their JSON
- ``report``: the terminal table; ``page``, ``chart`` and ``svg``: the HTML page
"""
