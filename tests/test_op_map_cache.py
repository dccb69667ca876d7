"""The cosine / decay map caches stay under their byte budget however many input sizes go through."""
import torch

import vheat_kernels
from vheat_kernels import dct
from vheat_kernels.map_cache import DEFAULT_BUDGET_BYTES, TensorLRU


def test_many_input_sizes_stay_under_the_budget():
    """Finding 15: one decay map (attenuation) and one cosine matrix (reference backend) per size."""
    dct.MAPS.clear()
    kept = 0
    for h in range(1000, 1012):  # 12 sizes: 12 x (8 MB fp64 decay map + 4 MB fp32 DCT) unbounded
        E = vheat_kernels.attenuation(torch.rand(h, h, 1))
        C = vheat_kernels.dct_matrix(h)
        kept += E.numel() * 8 + C.numel() * C.element_size()  # the fp64 decay map has E's (H, W)
    assert kept > 2 * DEFAULT_BUDGET_BYTES
    assert 0 < dct.MAPS.nbytes <= DEFAULT_BUDGET_BYTES


def test_least_recently_used_goes_first_and_oversized_entries_are_not_kept():
    cache = TensorLRU(budget_bytes=3 * 400)  # three 10x10 fp32 tensors
    built = []

    def build(n):
        built.append(n)
        return torch.full((n, n), float(n))

    for key in (10, 10, 10):
        cache.get(("a", key), lambda: build(10))
    assert built == [10]  # cached
    cache.get("b", lambda: build(10))
    cache.get("c", lambda: build(10))
    cache.get(("a", 10), lambda: build(10))  # a is now the most recent
    cache.get("d", lambda: build(10))  # evicts b
    assert "b" not in cache and ("a", 10) in cache and len(cache) == 3 and cache.nbytes == 1200
    big = cache.get("big", lambda: build(20))
    assert big.shape == (20, 20) and "big" not in cache and cache.nbytes == 1200
    cache.set_budget(400)
    assert len(cache) == 1 and cache.nbytes == 400
