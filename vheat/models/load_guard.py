"""Loading an official checkpoint into a VHeat model: fold first when it needs to, and a failed
load leaves the model as it was.

An infer-layout checkpoint (k_exp) only fits a folded model, so ``fold_for`` folds a train-mode
model before the load. ``load_state_dict`` copies every key that fits before it reports the
ones that do not; ``unchanged_on_failure`` undoes both when the load raises: the module
structure (which modules and Parameters each module holds, so a fold made for the load is
undone with the same Parameter objects) and then every tensor's values, from a copy taken
before the load (one copy of the weights for the load's duration).
"""
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
from torch import nn


def fold_for(model: nn.Module, state_dict: Mapping[str, Any]) -> None:
    """Fold a train-mode VHeat model when ``state_dict`` is in the infer layout (k_exp)."""
    from ..checkpoint_io import is_infer_layout

    if is_infer_layout(state_dict) and not model.infer_mode:
        model.set_infer_mode(True)


@contextmanager
def unchanged_on_failure(model: nn.Module) -> Iterator[None]:
    """Run a load into a ``VHeat`` model; if it raises, restore its structure and its state_dict."""
    structure = [(m, dict(m._modules), dict(m._parameters)) for m in model.modules()]
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        yield
    except BaseException:
        for module, modules, parameters in structure:
            module._modules.clear()
            module._modules.update(modules)
            module._parameters.clear()
            module._parameters.update(parameters)
        with torch.no_grad():
            for key, tensor in model.state_dict(keep_vars=True).items():
                tensor.copy_(saved[key])
        raise
