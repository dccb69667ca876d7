"""A failed weight load leaves a VHeat model as it was.

Loading an official checkpoint switches the model between train and infer mode before
``load_state_dict`` runs when the layouts differ, and ``load_state_dict`` copies every key
that fits before it reports the ones that do not. ``unchanged_on_failure`` undoes both when
the load raises: the train weights kept aside (a block forgets its stashed to_k when a
k_exp of another shape or value arrives), the mode (folding keeps the train weights aside
while a load runs, so that unfolding gives back the same Parameter objects), then every
tensor's values from a copy taken before the load (one copy of the weights for the load's
duration).
"""
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def unchanged_on_failure(model: nn.Module) -> Iterator[None]:
    """Run a load into a ``VHeat`` model; if it raises, restore the mode and the state_dict."""
    was_infer = model.infer_mode
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    heat_ops = [block.op for stage in model.layers for block in stage.blocks]
    # The train weights, registered or kept aside: what the model can unfold with.
    rate_nets = [op.rate_net for op in heat_ops]
    freq_embed = model._stashed_freq_embed if was_infer else model.freq_embed
    try:
        yield
    except BaseException:
        if model.infer_mode:  # whatever the load dropped: back to the train weights of before
            for op, to_k in zip(heat_ops, rate_nets):
                op._set_stash(to_k if op.infer_mode else None)
            object.__setattr__(model, "_stashed_freq_embed", freq_embed)
        model.set_infer_mode(was_infer)
        with torch.no_grad():
            for key, tensor in model.state_dict(keep_vars=True).items():
                tensor.copy_(saved[key])
        model._attenuation_cache.clear()
        raise
