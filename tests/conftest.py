import os
import random

import numpy as np
import pytest
import torch


def _single_torch_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


# Micro models are too small to gain from intra-op threads, and on a shared 2-core machine
# spinning OpenMP threads made them ~10x slower. Per test, or once for a whole module.
one_thread = pytest.fixture(_single_torch_thread)
one_thread_per_module = pytest.fixture(scope="module")(_single_torch_thread)


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """Fresh random inputs every run; the seed is printed on failure for reproduction."""
    seed = int(os.environ.get("VHEAT_TEST_SEED", random.SystemRandom().randrange(2**31)))
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)
    request.node.user_properties.append(("seed", seed))


@pytest.fixture(autouse=True)
def _gemm_choice_restored():
    """An in-process training run sets the process's GEMM library (vheat.models.linear.set_mode,
    through pin_training_library) for the life of the process; here it ends with the test."""
    from vheat.models import linear

    yield
    linear.set_mode(None)


@pytest.fixture(scope="module")
def tiny():
    """vheat_tiny at its default init, in eval mode."""
    import timm

    import vheat  # noqa: F401  (registers the timm models)

    torch.manual_seed(0)
    return timm.create_model("vheat_tiny").eval()


@pytest.fixture(scope="module")
def golden():
    """The official micro models' weights, inputs and logits (tests/reference_data.py)."""
    from reference_data import GOLDEN

    if not GOLDEN.is_file():
        pytest.skip(f"{GOLDEN} not found")
    return torch.load(GOLDEN, weights_only=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for name, value in item.user_properties:
            if name == "seed":
                rep.sections.append(("seed", f"reproduce with VHEAT_TEST_SEED={value}"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
