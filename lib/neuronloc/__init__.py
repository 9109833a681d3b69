"""neuronloc: locate task, skill and capability neurons in language models."""
from .hooks import Edit, capture, excite, intervene, neuron_hooks, silence
from .models import EMBEDDED, LM, ModelNotFoundError, load_model
from .sites import Family, Site, UnsupportedModelError, family_of, resolve_site
from .tasks import MCQuestion, Task, TaskError, qatt, render

__version__ = "0.1.0"
__all__ = [
    "EMBEDDED", "LM", "Edit", "Family", "MCQuestion", "ModelNotFoundError", "Site", "Task", "TaskError",
    "UnsupportedModelError", "capture", "excite", "family_of", "intervene", "load_model", "neuron_hooks",
    "qatt", "render", "resolve_site", "silence",
]
