"""Localization: from a model and data to the neurons (or sites) that carry a task.

`locate` runs the task-level methods of the three papers under one protocol
(NeuronLLM ACE, TN, QRNCA, KN, ACT, RANDOM; NEG NeurGrad; CNL sigma-mask), each a
`Method` that names its scorer, target and aggregation. The CNL paper's baselines
(causal tracing, ROME, knowledge circuits) live beside it in this package.
"""
from .methods import METHODS, Located, Method, locate, question_scores

__all__ = ["METHODS", "Located", "Method", "locate", "question_scores"]
