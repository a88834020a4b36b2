"""``shop up``: start the shop on loopback and keep it running until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shop.cli.options import add_cluster_arguments
from shop.local.addresses import AddressPlan
from shop.local.cluster import ClusterError, ClusterSpec, LocalCluster
from shop.local.prometheus import PrometheusServer, PrometheusUnavailable, start_prometheus


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "up", help="start every replica on loopback; Ctrl-C stops them gracefully"
    )
    add_cluster_arguments(parser)
    parser.add_argument(
        "--prometheus",
        action="store_true",
        help="also run a Prometheus (Debian package) scraping every replica, with the "
        "chart's recording rules and alerts loaded",
    )
    parser.set_defaults(run=run)


# The rule files the Helm chart and the compose stack load, when run from a checkout.
RULES_DIR = Path(__file__).resolve().parents[3] / "helm" / "grpc-shop" / "rules"


def start_scraper(cluster: LocalCluster, workdir: Path) -> PrometheusServer:
    return start_prometheus(workdir, cluster.metrics_targets(), sorted(RULES_DIR.glob("*.yaml")))


def spec_from_args(args: argparse.Namespace) -> ClusterSpec:
    return ClusterSpec(
        replicas={"gateway": args.gateway, "orders": args.orders, "inventory": args.inventory},
        plan=AddressPlan(
            net=args.net, grpc_port=args.base_port, metrics_port=args.base_port + 1000
        ),
        data_dir=Path(args.data_dir),
        database_url=args.database_url,
    )


def print_replicas(console: Console, cluster: LocalCluster) -> None:
    table = Table(title="grpc-shop replicas (SERVING)")
    for column in ("pod", "gRPC", "metrics", "pid"):
        table.add_column(column)
    for replica in cluster.replicas:
        pid = str(replica.process.pid) if replica.process else "-"
        table.add_row(replica.pod, replica.grpc_addr, f"http://{replica.metrics_addr}/metrics", pid)
    console.print(table)
    console.print(f"gateway target: [bold]{cluster.gateway_target}[/bold]")
    console.print(f"logs: {cluster.log_dir}")


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    cluster = LocalCluster(spec_from_args(args))
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    prometheus: PrometheusServer | None = None
    try:
        with console.status("starting replicas and waiting for SERVING..."):
            cluster.start()
        print_replicas(console, cluster)
        if args.prometheus:
            with console.status("starting Prometheus..."):
                prometheus = start_scraper(cluster, Path(args.data_dir) / "prometheus")
            console.print(f"prometheus: [bold]{prometheus.url}[/bold]")
        console.print("Ctrl-C stops every replica gracefully.")
        while not stop.wait(0.5):
            dead = [r.pod for r in cluster.replicas if not r.alive()]
            if dead:
                console.print(f"[red]replica exited unexpectedly: {', '.join(dead)}[/red]")
                return 1
    except (ClusterError, PrometheusUnavailable) as error:
        print(f"shop up: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if prometheus is not None:
            prometheus.stop()
        with console.status("stopping (drain, then graceful stop)..."):
            codes = cluster.stop()
        failed = {pod: code for pod, code in codes.items() if code not in (0, None)}
        if failed:
            console.print(f"[yellow]non-zero exits: {failed}[/yellow]")
    return 0
