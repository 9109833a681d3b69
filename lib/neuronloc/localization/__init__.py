"""Localization: from a model and data to the neurons (or sites) that carry a task.

`locate` runs the task-level methods of the three papers under one protocol
(NeuronLLM ACE, TN, QRNCA, KN, ACT, RANDOM; NEG NeurGrad; CNL sigma-mask), each a
`Method` that names its scorer, target and aggregation, with its parameters in a config
of the same name (`neuronloc.configs`: `locate(lm, questions, KN(k=50))`). The CNL paper's per-fact
baselines live beside it as functions: causal tracing (`causal_trace`), the ROME
rank-one edit (`rome_edit`, `applied`) and knowledge circuits (`knowledge_circuit`,
`circuit_recall`), all reading a `Fact` (`make_fact`). `commonality` holds CNL's
statistics of a data set's mask (Table 1 halves, Fig. 6 convergence).
"""
from .causal_tracing import Trace, causal_trace
from .commonality import (Agreement, answer_queries, chance_overlap, convergence, half_agreement, select_cnl,
                          select_kn, split_halves)


from .circuits import Circuit, Node, Recall, circuit_recall, knowledge_circuit, node_parameters, node_scores, parameter_share
from .facts import Fact, make_fact
from .methods import METHODS, Located, Method, locate, question_scores
from .rome import RomeEdit, applied, corpus_texts, key_moments, rome_edit, rome_edits

__all__ = ["Agreement", "answer_queries", "chance_overlap", "convergence", "half_agreement", "select_cnl",
           "select_kn", "split_halves", "METHODS", "Circuit", "Fact", "Located", "Method", "Node", "Recall", "RomeEdit", "Trace", "applied",
           "causal_trace", "circuit_recall", "corpus_texts", "key_moments", "knowledge_circuit", "locate",
           "make_fact", "node_parameters", "node_scores", "parameter_share", "question_scores", "rome_edit", "rome_edits"]
