"""Generated data sets (made by code, seeded).

CNL §4.1 decoupling data: 1000 comparative samples, each two sub-samples that share a
main part (an arithmetic expression such as "12+7") and differ in the task
requirement: give the answer ("provides the correct answer for 1+1=?") or write
Python code ("programs Python code for 1+1=?"). Overlap of the neurons located for
the two sub-samples of one pair vs. for all sub-samples of one requirement is the
decoupling experiment (CNL §4.2).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

OPERATORS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
OPERATOR_WEIGHTS = (0.6, 0.2, 0.2)  # mostly "a+b" as in the paper's example, sometimes - and *


@dataclass(frozen=True)
class DecouplingRecord:
    """One sub-sample: kind "answer" (answer = the number) or "code" (answer = Python code)."""

    pair_id: int
    kind: str
    prompt: str
    answer: str
    expr: str


def decoupling_pairs(n: int = 1000, seed: int = 0) -> list[DecouplingRecord]:
    """n pairs (2n records, pair by pair: answer then code) with n distinct expressions.

    Operands: 1..99 for + and - (a >= b), 2..19 for * (answers stay short, non-negative numbers).
    Same (n, seed) -> the same records.
    """
    if not 0 <= n <= 2 * 99 * 99 + 18 * 18:
        raise ValueError(f"n must be between 0 and {2 * 99 * 99 + 18 * 18} (distinct expressions), got {n}")
    rng = random.Random(seed)
    ops = list(OPERATORS)
    exprs, seen = [], set()
    while len(exprs) < n:
        op = rng.choices(ops, weights=OPERATOR_WEIGHTS)[0]
        hi = 19 if op == "*" else 99
        a, b = rng.randint(2 if op == "*" else 1, hi), rng.randint(2 if op == "*" else 1, hi)
        if op == "-" and a < b:
            a, b = b, a  # non-negative answers
        expr = f"{a}{op}{b}"
        if expr not in seen:  # distinct main parts, so pairs never share one
            seen.add(expr)
            exprs.append((expr, OPERATORS[op](a, b)))
    records = []
    for pair_id, (expr, value) in enumerate(exprs):
        records.append(DecouplingRecord(pair_id, "answer", f"Give the correct answer to {expr}=?", str(value), expr))
        records.append(DecouplingRecord(pair_id, "code", f"Write Python code that computes {expr}.", f"print({expr})", expr))
    return records
