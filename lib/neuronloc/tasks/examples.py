"""A hand-written QATT-style question (~120 tokens with SmolLM2's tokenizer), used by
the quickstart notebook, the benchmarks and the tests: role + rules, a one-shot
demonstration, 4 options."""
from __future__ import annotations

from .core import MCQuestion


def example_question() -> MCQuestion:
    demo = MCQuestion(stem="Where would you most likely find a stapler in an office building?",
                      options=("desk drawer", "refrigerator", "parking lot", "elevator shaft"), answer=0)
    return MCQuestion(
        stem="A person wants to keep their groceries cold on the drive home from the store. What should they bring?",
        options=("a cooler", "a blanket", "a lamp", "a kite"), answer=0, demonstration=demo, uid="example-0",
        instruction=("You are an expert in commonsense reasoning. Read the question and the four options. "
                     "Exactly one option is correct. Answer with the letter of the correct option only."))
