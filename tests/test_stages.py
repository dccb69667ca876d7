"""vheat_kernels.stages, the stage-shape table of every benchmark, check and test, against
the models it describes (built on the meta device)."""
from __future__ import annotations

import pytest
import torch

from vheat.downstream.backbone import VHeatBackbone
from vheat.models import MODEL_ARGS, VHeat
from vheat_kernels import stages

MODELS = {"T": "vheat_tiny", "S": "vheat_small", "B": "vheat_base"}


@pytest.mark.parametrize("letter", list(stages.VARIANTS))
@pytest.mark.parametrize("img_size", stages.CLASSIFICATION_SIZES)
def test_stage_planes_are_the_models(letter, img_size):
    with torch.device("meta"):
        model = VHeat(**MODEL_ARGS[MODELS[letter]], img_size=img_size)
    assert tuple(model.depths) == stages.VARIANTS[letter].depths
    # One freq_embed per stage, shaped like the plane its blocks' HCO runs on.
    assert stages.stage_planes(letter, img_size) == [tuple(p.shape) for p in model.freq_embed]


@pytest.mark.parametrize("family", list(stages.FAMILIES))
def test_detection_planes_are_the_backbones(family):
    letter = stages.FAMILIES[family]
    with torch.device("meta"):
        backbone = VHeatBackbone(**MODEL_ARGS[MODELS[letter]])
        features = backbone(torch.empty(1, 3, *stages.DETECTION_INPUT))
    assert stages.PLANES[f"det {family}"] == [(h, w, c) for _, c, h, w in (f.shape for f in features)]


def test_families_label_the_variants_that_share_planes():
    assert stages.stage_planes("T", 224) == stages.stage_planes("S", 224)  # T and S differ in depth only
    assert stages.PLANES["T/S@224"] == stages.stage_planes("T", 224) != stages.PLANES["B@224"]
    assert stages.CLASSIFICATION_SIDES == tuple(h for h, _, _ in stages.PLANES["B@224"])
