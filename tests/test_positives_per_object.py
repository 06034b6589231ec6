"""positives_per_object.py: feature map sizes, and the positives it counts
for a tiny and a large object under both assignments."""
import importlib

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData

from conftest import REPO

TOOLS = REPO / 'tools' / 'analysis_tools'


@pytest.fixture
def tool(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))
    return importlib.import_module('positives_per_object')


def test_featmap_sizes_round_up_at_every_stride(tool):
    # 130 padded to 132: 66, 33, 17
    assert tool.featmap_sizes(130, 64, 4, [2, 4, 8]) == [(66, 32), (33, 16),
                                                         (17, 8)]


def test_a_tiny_object_gets_no_positive_and_a_large_one_several(tool):
    gt = InstanceData(bboxes=torch.tensor([[13., 13., 17., 17.],
                                           [40., 40., 120., 120.]]),
                      labels=torch.zeros(2, dtype=torch.long))
    data = [(160, 160, gt)]
    dense = tool.dense_head_positives(
        Config.fromfile(REPO / 'configs/dr1mask/dr1mask_r18_fpn_toy.py'),
        data)
    rpn = tool.rpn_positives(
        Config.fromfile(
            REPO / 'configs/baselines/panoptic-fpn_r18_fpn_toy-panoptic.py'),
        data)
    # P3 points lie at 4 + 8k, none inside 13..17; the 80 px box has a 3 x 3
    # centre region on P4 (stride 16, radius 1.5) at least
    assert dense[0] == 0 and dense[1] >= 4
    # IoU of a 4 px box with the smallest (32 px) anchor is under 0.3
    assert rpn[0] == 0 and rpn[1] >= 1
    table = tool.table(data, {'DR1Mask': dense, 'RPN': rpn})
    assert '| 0-8 | 1 | 100 % | 0.0 | 100 % | 0.0 |' in table
