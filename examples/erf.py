"""A floating-point loop in the style of the classic Erlang pmap benchmarks: erf(x) from
its Taylor series, summed to full precision, many times an item.

    clusterctl pmap examples/erf.py
    clusterctl pmap examples/erf.py --limit 8 --unordered --indexed

Each item is x in [0, 3); each result is erf(x), computed ROUNDS times (so an item
costs a few milliseconds of CPU) and checked against math.erf.
"""

import math

ROUNDS = 200
TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def erf_series(x: float) -> float:
    """erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))."""
    total, term, n = 0.0, x, 0
    while True:
        piece = term / (2 * n + 1)
        total += piece
        if abs(piece) <= 1e-17 * abs(total):
            return TWO_OVER_SQRT_PI * total
        n += 1
        term *= -x * x / n


def task(x: float) -> float:
    for _ in range(ROUNDS - 1):
        erf_series(x)
    value = erf_series(x)
    if abs(value - math.erf(x)) > 1e-9:
        raise ArithmeticError(f"erf({x}) = {value}, expected {math.erf(x)}")
    return value


def inputs():
    return (i * 0.01 for i in range(300))


if __name__ == "__main__":
    print(sum(map(task, inputs())))
