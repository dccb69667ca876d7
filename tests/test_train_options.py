"""Training options: gradient accumulation, bf16 autocast on CPU, channels_last, HCO backend, torch.compile."""
import pytest
import torch

from train_helpers import make_image_folder, tiny_config
from vheat.train.checkpoint import list_checkpoints, read_checkpoint
from vheat.train.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("ds")), n_train=8, n_val=2)


def _final(out):
    return read_checkpoint(list_checkpoints(out)[-1])


def test_accumulation_equals_the_larger_batch(folder, tmp_path):
    # No randomness that depends on the micro-batch split: the two runs see the same 4-image steps.
    a = _final(train(tiny_config(folder, str(tmp_path / "a"), "data.batch_size=4"))["output"])
    b = _final(train(tiny_config(folder, str(tmp_path / "b"), "data.batch_size=2",
                                 "train.accumulation_steps=2"))["output"])
    assert a["global_step"] == b["global_step"] == 12
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_bf16_autocast_channels_last_and_backends(folder, tmp_path):
    base = tiny_config(folder, str(tmp_path / "fp32"), "train.epochs=1")
    ref = train(base)
    for name, opts in {"bf16": ["train.amp=bf16"], "cl": ["train.channels_last=true"],
                       "reference": ["model.hco_backend=reference"], "fft": ["model.hco_backend=fft"]}.items():
        got = train(tiny_config(folder, str(tmp_path / name), "train.epochs=1", *opts))
        assert got["status"] == "finished" and got["val"]["count"] == 6
        if name == "bf16":  # Adam's normalised steps amplify bf16 noise in tiny gradients: compare losses
            assert got["val"]["loss"] == pytest.approx(ref["val"]["loss"], rel=0.03)
            continue
        w_ref, w = _final(ref["output"])["model"], _final(got["output"])["model"]
        for k, v in w_ref.items():  # same recipe, same data: close to the fp32 / auto-backend weights
            torch.testing.assert_close(w[k], v, rtol=1e-3, atol=1e-4, msg=f"{name}: {k}")


def test_missing_backend_is_a_clear_error(folder, tmp_path):
    from vheat_kernels import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="'cuda' cannot run"):
        train(tiny_config(folder, str(tmp_path / "x"), "model.hco_backend=cuda", "train.epochs=1"))


def test_fp16_on_cpu_refused(folder, tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train(tiny_config(folder, str(tmp_path / "x"), "train.amp=fp16"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_torch_compile_trains(folder, tmp_path, backend):
    got = train(tiny_config(folder, str(tmp_path / "c"), "train.compile=true", "train.epochs=1",
                            f"model.hco_backend={backend}"))
    assert got["status"] == "finished" and got["val"]["count"] == 6


def test_run_settings_are_restored(folder, tmp_path):
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    train(tiny_config(folder, str(tmp_path / "d"), "train.epochs=1", "train.deterministic=true",
                      "train.threads=2"))
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
