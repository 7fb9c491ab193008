"""The seed's pipeline benchmark in Python: every stage multiplies C small matrices
(the work), and passes on its item, a D x D matrix (the data that travels).

    clusterctl pipeline examples/matrix_pipeline.py      # C=20, D=50, 4 stages, 60 items
    python examples/matrix_pipeline.py                   # the seed's table, a few (C, D)

Run as a script, it runs the pipeline on the default world (or $CLUSTERCTL_HOSTS) for a
few (C, D) pairs and prints the table the seed measured by hand from its traces: the
inter-arrival time T_A, the service time T_S of the slowest stage, and ρ = T_S / T_A,
per slot here (``figures`` gives each stage's). Large D makes an item heavy to carry
between farms; large C makes a stage heavy to compute. Pure Python, sized to run in
seconds.
"""

import os

STAGES = 4
ITEMS = 60
WORK = 12  # the multiplied matrices are WORK x WORK


def matrix(size, value=2.0):
    return [[value] * size for _ in range(size)]


def multiply(a, b):
    columns = list(zip(*b))
    return [[sum(x * y for x, y in zip(row, column)) for column in columns] for row in a]


def stage_of(c):
    """A stage that multiplies ``c`` WORK x WORK matrices, then passes its item on."""

    def stage(item):
        product = matrix(WORK, 1.0)
        factor = matrix(WORK, 2.0 / WORK)
        for _ in range(c):
            product = multiply(product, factor)
        return item

    stage.__name__ = f"multiply{c}"
    return stage


def items_of(d, n=ITEMS):
    return [matrix(d) for _ in range(n)]


C, D = int(os.environ.get("MATRIX_C", 20)), int(os.environ.get("MATRIX_D", 50))
stages = [stage_of(C) for _ in range(STAGES)]


def inputs():
    return items_of(D)


def seed_table(pairs=((20, 50), (20, 150), (20, 300), (5, 300))):
    """Run the pipeline for each (C, D); return rows (C, D, T_A, T_S, ρ, items/s)."""
    from clusterctl import Cluster
    from clusterctl.api.pipeline import Pipeline, figures

    rows = []
    with Cluster() as cluster:
        cluster.world()
        for c, d in pairs:
            # each stage its own farm, as in the seed: one queue and one set of slots per stage
            run = Pipeline(cluster, [(stage_of(c), {"replicas": 1}) for _ in range(STAGES)],
                           items_of(d))
            for _ in run.values():
                pass
            figs = figures(run.stats)
            slowest = max(figs, key=lambda r: r.t_s or 0.0)
            arrivals = [r.t_a for r in figs if r.t_a]
            t_a = sum(arrivals) / len(arrivals) if arrivals else None
            rows.append((c, d, t_a, slowest.t_s, slowest.rho, run.stats.rate()))
    return rows


if __name__ == "__main__":
    print(f"{STAGES} stages, {ITEMS} items; each stage multiplies C {WORK}x{WORK} matrices "
          "and passes on a DxD matrix")
    print(f"{'C':>4} {'D':>5} {'T_A ms':>8} {'T_S ms':>8} {'ρ':>6} {'items/s':>8}")
    for c, d, t_a, t_s, rho, rate in seed_table():
        print(f"{c:>4} {d:>5} {t_a * 1e3 if t_a else float('nan'):>8.2f} "
              f"{t_s * 1e3 if t_s else float('nan'):>8.2f} {rho or float('nan'):>6.2f} "
              f"{rate or 0:>8.1f}")
