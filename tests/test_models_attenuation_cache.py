"""The eval-mode attenuation cache (vheat.models.freq_embed.AttenuationCache) never serves E
built from weights that have changed since, however they were changed: the ways below bypass
PyTorch's version counters (``.data`` writes, pruning's reparametrisation) or swap tensors."""
import copy

import pytest
import torch
from torch.nn.utils import prune

from test_models import random_micro


def _uncached_copy(model):
    twin = copy.deepcopy(model)
    twin.cache_attenuation = False
    return twin


def _scale_freq_embed_data(model):
    for p in model.freq_embed:
        p.data.mul_(50)


def _prune_to_k(model, amount=0.9):
    for stage in model.layers:
        for block in stage.blocks:
            prune.l1_unstructured(block.op.to_k[0], "weight", amount=amount)


def _prune_to_k_twice(model):
    _prune_to_k(model, 0.3)
    model(torch.randn(1, 3, 64, 64))  # cached with the first mask; the second only swaps the mask buffer
    _prune_to_k(model, 0.9)


def _assign_other_weights(model):
    model.load_state_dict(random_micro(seed=7, hco_backend="fft").state_dict(), assign=True)


def _assign_one_stage(model):
    other = random_micro(seed=8, hco_backend="fft")
    model.layers[2].load_state_dict(other.layers[2].state_dict(), assign=True)


def _replace_to_k_data(model):
    weight = model.layers[1][0].op.to_k[0].weight
    weight.data = torch.randn_like(weight)


@pytest.mark.parametrize("change", [_scale_freq_embed_data, _prune_to_k, _prune_to_k_twice, _assign_other_weights, _assign_one_stage,
                                    _replace_to_k_data])
def test_eval_logits_follow_weight_changes(change):
    model = random_micro(hco_backend="fft").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        assert len(model._attenuation_cache) > 0  # the cache is in use
        change(model)
        after = model(x)
        expected = _uncached_copy(model)(x)
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)


def test_many_input_sizes_stay_under_the_byte_budget():
    model = random_micro(hco_backend="fft").eval()
    cache = model._attenuation_cache
    cache.max_bytes = 64 << 10
    with torch.no_grad():
        for side in range(64, 128, 8):
            model(torch.randn(1, 3, side, side))
    stored = sum(t.numel() * t.element_size() for value in cache._entries.values() for t in value)
    assert 0 < stored <= cache.max_bytes and len(cache) < 4 * 8
