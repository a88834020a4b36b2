"""The balancing modes, one module each, and the registry of their names.

Each mode is the local counterpart of one Kubernetes set-up; where the Helm chart has
the same set-up (its ``mode`` value), the lab uses the chart's name for it:

- ``clusterip``: a ClusterIP Service (kube-proxy, L4) -> HAProxy ``mode tcp`` at a
  service IP, per connection; clients pick_first.
- ``headless-no-maxage``: a headless Service + CoreDNS -> the lab's cluster DNS; gRPC's
  own DNS resolver with round_robin. The chart has no such mode: it shows why the
  chart's headless mode sets a max connection age.
- ``headless``: the same, and servers send GOAWAY after 2 s (``max_connection_age``)
  while clients may re-resolve after 1 s.
- ``istio``: Istio sidecars (Envoy, L7) -> a real Envoy beside each pod, configured
  over ADS by the lab's control plane, balancing per call.
- ``proxyless``: proxyless gRPC with istiod -> the lab's ADS control plane; ``xds:///``
  targets.

Two more run in the scenarios (``shop.lab.scenarios``), where pods are not equal; they
are the chart's headless mode with one of its balancing values switched on:

- ``headless-wrr``: ``weighted_round_robin`` fed by the pods' ORCA load reports;
- ``headless-outlier``: round_robin inside gRPC's outlier detection.
"""

from __future__ import annotations

from shop.lab.modes.base import LabCluster, Mode, ModeEnv
from shop.lab.modes.clusterip import ClusterIp
from shop.lab.modes.headless import Headless
from shop.lab.modes.headless_no_maxage import HeadlessNoMaxAge
from shop.lab.modes.headless_outlier import HeadlessOutlier
from shop.lab.modes.headless_wrr import HeadlessWrr
from shop.lab.modes.istio import Istio
from shop.lab.modes.proxyless import Proxyless

# In the order the lab runs them: the problem, DNS without and with the fix, the two
# load-aware variants of the fix, then the two ways a mesh balances.
MODES: dict[str, type[Mode]] = {
    mode.name: mode
    for mode in (
        ClusterIp,
        HeadlessNoMaxAge,
        Headless,
        HeadlessWrr,
        HeadlessOutlier,
        Istio,
        Proxyless,
    )
}
MODE_NAMES = tuple(MODES)
# What a plain ``shop lab`` runs: one mode per chart set-up, and the one that shows why
# the chart's headless mode ages connections.
DEFAULT_MODES = ("clusterip", "headless-no-maxage", "headless", "istio", "proxyless")


def mode_class(name: str) -> type[Mode]:
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown mode {name!r}: choose from {', '.join(MODE_NAMES)}") from None


def create_mode(name: str, cluster: LabCluster) -> Mode:
    """The mode called ``name``, set up for ``cluster`` (not started yet)."""
    return mode_class(name)(cluster)


__all__ = [
    "DEFAULT_MODES",
    "MODES",
    "MODE_NAMES",
    "LabCluster",
    "Mode",
    "ModeEnv",
    "create_mode",
    "mode_class",
]
