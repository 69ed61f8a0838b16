"""The bundled problem set: well-formed, and every answer recomputed here."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from fractions import Fraction

import sympy

from tir_agent.data import problems_path
from tir_agent.grading import is_equivalent


def collatz(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def frac(f: Fraction) -> str:
    return f"\\frac{{{f.numerator}}}{{{f.denominator}}}"


ANSWERS: dict[str, Callable[[], object]] = {
    "sum-squares-10": lambda: sum(i * i for i in range(1, 11)),
    "product-digits": lambda: 123 * 456,
    "power-two-20": lambda: 2**20,
    "factorial-10": lambda: math.factorial(10),
    "gcd": lambda: math.gcd(1071, 462),
    "lcm": lambda: math.lcm(12, 18, 30),
    "fraction-sum": lambda: frac(
        Fraction(1, 2) + Fraction(1, 3) + Fraction(1, 6) + Fraction(1, 12)
    ),
    "percent": lambda: 240 * 15 // 100,
    "sum-1-100": lambda: sum(range(101)),
    "primes-below-100": lambda: len(list(sympy.primerange(2, 100))),
    "sum-primes-50": lambda: sum(sympy.primerange(2, 50)),
    "mod-power": lambda: pow(3, 100, 7),
    "divisors-360": lambda: sympy.divisor_count(360),
    "mod-100": lambda: pow(7, 2024, 100),
    "digit-sum-2-100": lambda: sum(map(int, str(2**100))),
    "fib-30": lambda: sympy.fibonacci(30),
    "linear-eq": lambda: sympy.solve(sympy.Symbol("x") * 3 + 7 - 22)[0],
    "quadratic-roots-sum": lambda: sum(
        sympy.solve(sympy.Symbol("x") ** 2 - 7 * sympy.Symbol("x") + 10)
    ),
    "quadratic-larger-root": lambda: max(
        sympy.solve(2 * sympy.Symbol("x") ** 2 - 3 * sympy.Symbol("x") - 2)
    ),
    "system": lambda: 7 * 3,
    "binomial": lambda: math.comb(10, 3),
    "arrangements": lambda: math.factorial(6) // (math.factorial(3) * math.factorial(2)),
    "dice-sum-7": lambda: frac(
        Fraction(sum(a + b == 7 for a in range(1, 7) for b in range(1, 7)), 36)
    ),
    "coins": lambda: sum(
        1 for q in range(3) for d in range(6) for n in range(11) if 25 * q + 10 * d + 5 * n <= 50
    ),
    "triangle-area": lambda: math.isqrt(21 * 8 * 7 * 6),
    "circle-lattice": lambda: sum(
        1 for x in range(-5, 6) for y in range(-5, 6) if x * x + y * y <= 25
    ),
    "sum-cubes": lambda: sum(i**3 for i in range(1, 21)),
    "trailing-zeros": lambda: (
        len(str(math.factorial(100))) - len(str(math.factorial(100)).rstrip("0"))
    ),
    "collatz": lambda: collatz(27),
    "euler-phi": lambda: sum(math.gcd(k, 1000) == 1 for k in range(1, 1001)),
    "pythagorean": lambda: sum(
        1 for a in range(1, 65) for b in range(a, 65) if a * a + b * b == 65 * 65
    ),
    "floor-sum": lambda: sum(math.isqrt(k) for k in range(1, 101)),
}


def test_rows_are_well_formed_and_answers_recomputed() -> None:
    rows = [json.loads(line) for line in problems_path().read_text().splitlines()]
    assert 20 <= len(rows) <= 50
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["id"] for r in rows} == set(ANSWERS)
    for row in rows:
        assert row["problem"].strip() and isinstance(row["expected_answer"], str)
        computed = str(ANSWERS[row["id"]]())
        assert row["expected_answer"] == computed, row["id"]
        assert is_equivalent(computed, row["expected_answer"])
    assert rows[0]["problem"] == "Calculate the sum of squares from 1 to 10."
