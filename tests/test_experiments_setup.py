"""`neuronloc.experiments.setup`, the notebooks' shared setup cell: it silences exactly the
run-to-run noise nbval would compare, and nothing else."""
from __future__ import annotations

import warnings

import pandas as pd
import torch
import transformers

from neuronloc.attribution import CompletenessWarning
from neuronloc.experiments import setup


def test_setup_silences_the_noise_and_only_that():
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    try:
        with warnings.catch_warnings(record=True) as caught, pd.option_context("display.float_format", None):
            warnings.simplefilter("always")
            setup(7)
            seeded = torch.rand(3)
            warnings.warn("x", CompletenessWarning)
            warnings.warn("something else", UserWarning)
            warnings.warn("deprecated", FutureWarning)
            assert pd.get_option("display.float_format")(0.016) == "0.016"
        assert [str(w.message) for w in caught] == ["something else", "deprecated"]
        torch.manual_seed(7)
        assert torch.equal(seeded, torch.rand(3))
        assert transformers.logging.get_verbosity() == transformers.logging.ERROR
        assert not transformers.utils.logging.is_progress_bar_enabled()
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
