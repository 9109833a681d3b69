"""Questions, tasks, prompt rendering, QATT and data-set loaders."""
from .core import (
    LETTERS,
    READOUTS,
    MCQuestion,
    Task,
    TaskError,
    balance,
    fixed_options,
    continuation_ids,
    demonstrations,
    few_shot,
    label_token_ids,
    proxy_orders,
    qatt,
    read_alike,
    render,
    sample_distractors,
    with_distractors,
)

__all__ = [
    "LETTERS", "MCQuestion", "READOUTS", "Task", "TaskError", "balance", "continuation_ids", "demonstrations", "few_shot", "fixed_options", "label_token_ids",
    "proxy_orders", "qatt", "read_alike", "render", "sample_distractors", "with_distractors",
]
