"""``shop bench``: the cost of the runtime, of tracing and of the shop's hops.

Modules, one job each:

- :mod:`shop.bench.configs`: the ten configurations and the ratios between them.
- :mod:`shop.bench.testbed`: starts every configuration's servers on loopback.
- :mod:`shop.bench.echo_process`: launcher for ``python -m shop.echo [--bare
  [--forward HOST:PORT]]`` (a bare chain's hops forward).
- :mod:`shop.bench.otlp_sink`: an OTLP/gRPC receiver that counts the spans it gets.
- :mod:`shop.bench.loadrun`: one measurement, ``shop load`` in its own process.
- :mod:`shop.local.cpu` (shared with the lab): server CPU time from ``/proc``.
- :mod:`shop.bench.served`: calls a server handled, from its own Prometheus counter.
- :mod:`shop.bench.runner`: the interleaved plan of rounds, from start to report.
- :mod:`shop.bench.results`: medians, spreads and ratios; the ``--json`` document.
- :mod:`shop.bench.table`, :mod:`shop.bench.progress`: what a person sees.
- ``--profile``: :mod:`shop.bench.profile` runs py-spy on the SQLite chains' processes,
  :mod:`shop.bench.stacks` sorts its stacks into categories, :mod:`shop.bench.breakdown`
  shares the measured CPU per call out over them, :mod:`shop.bench.flamegraph` draws.
- :mod:`shop.bench.watch`: what idle WatchOrder streams cost
  (``python -m shop.bench.watch --streams 500``), a separate measurement.
"""
