"""Neuron scorers (one call shape, one result type, a registry) and aggregators.

    scores = attribute("ig", lm, question, target="option_prob", steps=16)
"""
from . import gradients as _gradients  # noqa: F401  (registers neurgrad, grad, grad_x_act, activation, lpi, random)
from . import ig as _ig  # noqa: F401  (registers ig, ig_positions)
from .base import SCORERS, NeuronScores, attribute, register
from .gradients import answer_position_grads, neurgrad_options
from .ig import CompletenessWarning, alphas, check_completeness, integrated_gradients

__all__ = [
    "SCORERS", "CompletenessWarning", "NeuronScores", "alphas", "answer_position_grads", "attribute",
    "check_completeness", "integrated_gradients", "neurgrad_options", "register",
]
