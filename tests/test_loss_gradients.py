"""tools/analysis_tools/loss_gradients.py: each loss term's gradient, taken
alone, reaches exactly the parameters it flows through."""
import importlib
import json

import pytest

from conftest import CONFIGS, REPO
from test_tools import generate_toy

TOOL = REPO / 'tools' / 'analysis_tools' / 'loss_gradients.py'


@pytest.fixture
def tool(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOL.parent))
    return importlib.import_module('loss_gradients')


def test_each_loss_reaches_only_its_own_path(tool, tmp_path, monkeypatch,
                                             capsys):
    generate_toy(tmp_path, num_train=2, num_val=1)
    monkeypatch.chdir(tmp_path)
    rows = tool.main([
        str(CONFIGS / 'dr1mask_r18_fpn_toy-panoptic.py'), '--batches', '1',
        '--cfg-options', 'train_dataloader.batch_size=2', '--out',
        'grads/rows.json'
    ])
    assert json.loads((tmp_path / 'grads' / 'rows.json').read_text()) == rows
    norm = {(r['loss'], r['group']): r['grad_norm'] for r in rows}
    losses = {r['loss'] for r in rows}
    assert losses == {'loss_cls', 'loss_bbox', 'loss_centerness',
                      'loss_mask', 'loss_panoptic', 'loss_aux_semantic',
                      'total'}
    # the class loss stops at the class tower and its predictor
    for group in ('bbox_head.top_layer', 'bbox_head.reg_convs', 'basis',
                  'panoptic_head', 'semantic_head'):
        assert norm[('loss_cls', group)] == 0, group
    assert norm[('loss_cls', 'bbox_head.cls_convs')] > 0
    # the masks reach the box tower through the top layer (the
    # embeddings), and the basis
    for group in ('bbox_head.top_layer', 'bbox_head.reg_convs', 'basis',
                  'backbone'):
        assert norm[('loss_mask', group)] > 0, group
    assert norm[('loss_mask', 'bbox_head.cls_convs')] == 0
    assert norm[('loss_panoptic', 'panoptic_head')] > 0
    # the auxiliary semantic head sits on P3 only
    assert norm[('loss_aux_semantic', 'bbox_head.top_layer')] == 0
    # the total's gradient is the sum of the terms': no term is left out
    assert norm[('total', 'all')] <= sum(
        norm[(loss, 'all')] for loss in losses - {'total'}) + 1e-6
    assert norm[('total', 'bbox_head.cls_convs')] > 0
    table = capsys.readouterr().out
    assert '| loss | all | backbone | neck | bbox_head.cls_convs |' in table
    assert '| loss_mask |' in table
