"""Count the primes in consecutive ranges of integers: CPU-bound, about 10 ms an item.

    clusterctl pmap examples/primes.py               # 200 ranges below 1,000,000
    clusterctl pmap examples/primes.py --limit 20    # the first 20
    echo '[0, 1000]' | clusterctl pmap examples/primes.py --fn count_between -i -

Each item is the start of a range of SPAN integers; each result is how many of them are
prime. The sum of all results is the number of primes below 1,000,000 (78,498).
"""

import math

SPAN = 5_000


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    for d in range(3, math.isqrt(n) + 1, 2):
        if n % d == 0:
            return False
    return True


def count_between(bounds) -> int:
    low, high = bounds
    return sum(1 for n in range(low, high) if is_prime(n))


def task(start: int) -> int:
    return count_between((start, start + SPAN))


def inputs():
    return range(0, 1_000_000, SPAN)


if __name__ == "__main__":  # the same, sequentially, for comparison
    print(sum(map(task, inputs())))
