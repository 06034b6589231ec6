"""The model's outputs are held against a reference: same boxes, scores,
labels, masks and panoptic ids, on the same inputs and weights, so a change
meant to keep them (a refactoring, a faster computation) is shown to. So are
its training losses and their gradients (``losses_reference.npz``, first
written at commit 931ad8b, before the training targets were computed at the
strides they are read at).

``tests/data/outputs_reference.npz`` was first written at commit 9388d20, by
:func:`outputs` below with that commit's names for the same settings, and
held the move of the post-processing into ``post_processing.py``. It was
rewritten (``python tests/test_outputs_unchanged.py``) when the instance
crop moved onto the basis' grid (``InstancePredictionModule.crop``): the
panoptic model's instance masks changed by design, nothing else did. A
change meant to alter outputs rewrites it in the same commit and says so.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (build_model, make_sample, preprocess, seeded_weights,
                      small_model_cfg)

REFERENCE = Path(__file__).parent / 'data' / 'outputs_reference.npz'
LOSSES_REFERENCE = Path(__file__).parent / 'data' / 'losses_reference.npz'
SPECS = [
    dict(img_hw=(70, 90), boxes=[[4, 4, 40, 30], [20, 10, 60, 62]],
         labels=[0, 1], scale=0.5),
    dict(img_hw=(64, 52), boxes=[[4, 4, 30, 30]], labels=[3], scale=1.25),
]
MODELS = {'panoptic': dict(panoptic=True, attention='vector'),
          'instance': dict(panoptic=False, attention='factored')}


def outputs(name: str) -> dict:
    """Every output of one small model on SPECS, as numpy arrays."""
    cfg = small_model_cfg(**MODELS[name])
    cfg.test_cfg.max_per_img = 20
    model = build_model(cfg).eval()
    seeded_weights(model)
    images, samples = zip(*[make_sample(**spec) for spec in SPECS])
    data = preprocess(model, list(images), list(samples), training=False)
    with torch.no_grad():
        results = model.predict(data['inputs'], data['data_samples'])
    arrays = {}
    for i, result in enumerate(results):
        instances = result.pred_instances
        prefix = f'{name}/{i}/'
        arrays[prefix + 'bboxes'] = instances.bboxes.numpy()
        arrays[prefix + 'scores'] = instances.scores.numpy()
        arrays[prefix + 'labels'] = instances.labels.numpy()
        arrays[prefix + 'masks'] = np.packbits(instances.masks.numpy())
        if 'pred_panoptic_seg' in result:
            arrays[prefix + 'panoptic'] = \
                result.pred_panoptic_seg.sem_seg.numpy()
    return arrays


def losses(name: str) -> dict:
    """Every training loss of one small model on SPECS (two overlapping
    instances, images that are no multiple of the strides), and the squared
    norm of the gradient of their sum on each of the model's parts."""
    cfg = small_model_cfg(**MODELS[name])
    model = build_model(cfg).train()
    seeded_weights(model)
    images, samples = zip(*[make_sample(**spec) for spec in SPECS])
    data = preprocess(model, list(images), list(samples), training=True)
    values = model.loss(data['inputs'], data['data_samples'])
    loss, _ = model.parse_losses(values)
    loss.backward()
    arrays = {f'{name}/{key}': value.detach().numpy()
              for key, value in values.items()}
    for part, module in model.named_children():
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if grads:
            arrays[f'{name}/grad/{part}'] = np.array(
                sum(g.double().square().sum() for g in grads).item())
    return arrays


@pytest.mark.parametrize('name', list(MODELS))
def test_losses_and_gradients_equal_the_reference(name):
    reference = np.load(LOSSES_REFERENCE)
    new = losses(name)
    assert set(new) == {k for k in reference.files if k.startswith(name)}
    for key, value in new.items():
        np.testing.assert_allclose(value, reference[key], rtol=1e-5,
                                   err_msg=key)
    # Every loss of the model, and gradients through its heads.
    assert f'{name}/loss_mask' in new and f'{name}/grad/basis' in new
    assert new[f'{name}/grad/mask_head'] > 0 if name == 'instance' \
        else new[f'{name}/grad/panoptic_head'] > 0


@pytest.mark.parametrize('name', list(MODELS))
def test_outputs_equal_those_before_the_restructuring(name):
    reference = np.load(REFERENCE)
    new = outputs(name)
    assert set(new) == {k for k in reference.files if k.startswith(name)}
    for key, value in new.items():
        if key.endswith(('bboxes', 'scores')):
            np.testing.assert_allclose(value, reference[key], rtol=1e-5,
                                       atol=1e-4, err_msg=key)
        else:
            np.testing.assert_array_equal(value, reference[key],
                                          err_msg=key)
    # The comparison has substance: instances, masks and panoptic things.
    assert all(len(new[f'{name}/{i}/labels']) > 0 for i in range(2))
    assert all(new[f'{name}/{i}/masks'].any() for i in range(2))
    if name == 'panoptic':
        assert (new['panoptic/0/panoptic'] >= 1000).any()


if __name__ == '__main__':
    # `python tests/test_outputs_unchanged.py outputs|losses` rewrites that
    # reference: only for a change meant to alter it.
    which = sys.argv[1:] == ['losses']
    torch.manual_seed(0)
    np.savez_compressed((REFERENCE, LOSSES_REFERENCE)[which], **{
        key: value
        for name in MODELS
        for key, value in (outputs, losses)[which](name).items()
    })
