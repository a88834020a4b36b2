"""The load generator behind ``shop load`` and ``shop demo``.

Modules, one job each:

- :mod:`shop.loadgen.stats`: latency histogram, status counts, per-pod counts per hop,
  and the :class:`~shop.loadgen.stats.Summary` whose JSON form ``shop load --json`` prints.
- :mod:`shop.loadgen.workload`: what one call is (mix, place, products, echo).
- :mod:`shop.loadgen.channels`: client channels and the up-front connectivity check.
- :mod:`shop.loadgen.runner`: closed-loop workers and the open-loop (fixed-rate) scheduler.
- :mod:`shop.loadgen.progress`: the live progress bar.
- :mod:`shop.loadgen.report`: the rich tables printed after a run.
- :mod:`shop.loadgen.session`: one complete run, from flags to summary.
"""
