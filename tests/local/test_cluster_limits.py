"""A local cluster with limits runs each pod in its cgroup, as the kubelet does: from
the first start, through a restart (same group, counters going on), until stop()
removes every group."""

from __future__ import annotations

from pathlib import Path

import pytest

from shop.local.addresses import AddressPlan, free_net
from shop.local.cgroups import CgroupsUnavailable, PodCgroups, PodLimits
from shop.local.cluster import ClusterSpec, LocalCluster

from ..support.cgroups import require_cgroups
from ..support.clusters import ClusterFactory

# Generous CPU: start-up (imports, schema creation) should not be throttled here.
LIMITS = {
    "gateway": PodLimits(1000, 256),
    "orders": PodLimits(1000, 256),
    "inventory": PodLimits(1000, 256),
}


def _cgroup_paths(pid: int) -> list[str]:
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return [line.split(":", 2)[2] for line in lines]


def test_replicas_run_in_their_pod_cgroups(cluster_factory: ClusterFactory) -> None:
    require_cgroups()
    cluster = cluster_factory(gateway=1, orders=1, inventory=1, limits=LIMITS)
    assert cluster.pod_cgroups is not None
    folders = cluster.pod_cgroups.paths
    for replica in cluster.replicas:
        group = cluster.cgroup(replica.pod)
        assert group is not None and group.limits == LIMITS[replica.service]
        assert replica.process is not None
        tail = f"/{folders[0].name}/{replica.pod}"
        assert sum(path.endswith(tail) for path in _cgroup_paths(replica.process.pid)) >= 1
        assert group.pids() == {replica.process.pid}
        assert group.cpu_stat().usage_s > 0  # its start-up ran in the group
        assert group.memory_bytes() > 0

    # A restarted replica (the supervisor's and the lab's way): the same pod group, the
    # new process in it, the counters going on from where they were.
    inventory = cluster.replicas_of("inventory")[0]
    group = cluster.cgroup(inventory.pod)
    assert group is not None
    before = group.cpu_stat()
    cluster.signal_replica(inventory)
    assert cluster.wait_exit(inventory, timeout_s=30) == 0
    cluster.start_replica("inventory", 0)
    cluster.wait_ready(60, replica=inventory)
    assert inventory.process is not None
    assert cluster.cgroup(inventory.pod) is group
    assert group.pids() == {inventory.process.pid}
    assert group.cpu_stat().usage_s > before.usage_s

    cluster.stop()
    assert not any(folder.exists() for folder in folders)
    # (The lab samples cgroup(pod); after stop there is none.)
    assert cluster.cgroup("gateway-0") is None


def test_without_cgroups_no_replica_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(owner: str) -> PodCgroups:
        raise CgroupsUnavailable("no cgroups in this test")

    monkeypatch.setattr(PodCgroups, "create", unavailable)
    spec = ClusterSpec(
        replicas={"gateway": 1, "orders": 1, "inventory": 1},
        plan=AddressPlan(net=free_net()),
        data_dir=tmp_path,
        limits=LIMITS,
    )
    cluster = LocalCluster(spec)
    with pytest.raises(CgroupsUnavailable, match="no cgroups in this test"), cluster:
        pass
    assert cluster.replicas == []  # nothing ran without its limits


def test_without_limits_there_are_no_cgroups(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(gateway=1, orders=1, inventory=1)
    assert cluster.pod_cgroups is None
    assert cluster.cgroup("gateway-0") is None
