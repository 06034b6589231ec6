"""The model on a GPU against the same model on the CPU (marked ``cuda``:
skipped where no GPU is; ``tools/gpu_check.sh`` runs them on one).

Same seeded weights and inputs on both devices: the losses, gradients,
predictions and post-processing must agree within float tolerance, and
mixed precision (fp16 autocast, what ``--amp`` uses on a GPU) must train
with finite losses and gradients.
"""
import pytest
import torch

from mmdet.evaluation.functional import INSTANCE_OFFSET

from conftest import (build_model, make_sample, preprocess, seeded_weights,
                      small_model_cfg)
from projects.dr1mask.models.post_processing import (panoptic_segmentation,
                                              paste_masks_in_image)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='no GPU')
]
SPECS = [
    dict(img_hw=(96, 128), boxes=[[8, 8, 60, 50], [40, 30, 120, 90]],
         labels=[0, 2]),
    dict(img_hw=(80, 100), boxes=[[10, 20, 70, 70]], labels=[1]),
]


def model_on(device: str, **cfg) -> torch.nn.Module:
    model = build_model(small_model_cfg(**cfg))
    seeded_weights(model)
    return model.to(device)


def batch(model, training: bool) -> dict:
    images, samples = zip(*[make_sample(**spec) for spec in SPECS])
    return preprocess(model, list(images), list(samples), training)


@pytest.mark.parametrize('attention', ['vector', 'factored'])
def test_losses_and_gradients_match_the_cpu(attention):
    panoptic = attention == 'vector'
    results = {}
    for device in ('cpu', 'cuda'):
        model = model_on(device, panoptic=panoptic, attention=attention)
        model.train()
        data = batch(model, training=True)
        losses = model.loss(data['inputs'], data['data_samples'])
        sum(losses.values()).backward()
        results[device] = (
            {k: v.item() for k, v in losses.items()},
            {n: p.grad.cpu() for n, p in model.named_parameters()
             if p.grad is not None})
    (cpu_losses, cpu_grads), (gpu_losses, gpu_grads) = results.values()
    assert cpu_losses.keys() == gpu_losses.keys()
    for name in cpu_losses:
        assert gpu_losses[name] == pytest.approx(cpu_losses[name], rel=1e-3,
                                                 abs=1e-5), name
    assert cpu_grads.keys() == gpu_grads.keys()
    for name in cpu_grads:
        torch.testing.assert_close(gpu_grads[name], cpu_grads[name],
                                   rtol=1e-2, atol=1e-4, msg=name)


def test_predictions_match_the_cpu():
    outputs = {}
    for device in ('cpu', 'cuda'):
        model = model_on(device, panoptic=True).eval()
        data = batch(model, training=False)
        with torch.no_grad():
            outputs[device] = model.predict(data['inputs'],
                                            data['data_samples'])
    for cpu, gpu in zip(outputs['cpu'], outputs['cuda']):
        torch.testing.assert_close(gpu.pred_instances.bboxes.cpu(),
                                   cpu.pred_instances.bboxes, rtol=1e-4,
                                   atol=1e-3)
        assert torch.equal(gpu.pred_instances.labels.cpu(),
                           cpu.pred_instances.labels)
        masks_agree = (gpu.pred_instances.masks.cpu() ==
                       cpu.pred_instances.masks).float().mean()
        assert masks_agree >= 0.999
        ids_agree = (gpu.pred_panoptic_seg.sem_seg.cpu() ==
                     cpu.pred_panoptic_seg.sem_seg).float().mean()
        assert ids_agree >= 0.999


def test_post_processing_matches_the_cpu():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3 + 6, 20, 30, generator=gen)
    corners = torch.rand(6, 2, generator=gen) * torch.tensor([100., 60.])
    bboxes = torch.cat([corners, corners + 20], 1)
    labels = torch.arange(6) % 4
    probs = torch.rand(6, 56, 56, generator=gen)
    results = {}
    for device in ('cpu', 'cuda'):
        ids = panoptic_segmentation(
            logits.to(device), labels.to(device), bboxes.to(device),
            (80, 120), (160, 240), 4, 3, stride=4, mask_overlap=0.5,
            stuff_area_limit=16)
        masks = paste_masks_in_image(probs.to(device), bboxes.to(device),
                                     (80, 120), 0.5)
        results[device] = (ids.cpu(), masks.cpu())
    (cpu_ids, cpu_masks), (gpu_ids, gpu_masks) = results.values()
    assert (cpu_ids >= INSTANCE_OFFSET).any()
    assert (gpu_ids == cpu_ids).float().mean() >= 0.999
    assert (gpu_masks == cpu_masks).float().mean() >= 0.999


def test_fp16_autocast_trains_with_finite_losses_and_gradients():
    model = model_on('cuda', panoptic=True).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler('cuda')
    data = batch(model, training=True)
    for _ in range(3):
        with torch.autocast('cuda', dtype=torch.float16):
            losses = model.loss(data['inputs'], data['data_samples'])
        total = sum(losses.values())
        for name, value in losses.items():
            assert torch.isfinite(value), name
        optimizer.zero_grad()
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
        for name, param in model.named_parameters():
            if param.grad is not None:
                assert torch.isfinite(param.grad).all(), name
        scaler.step(optimizer)
        scaler.update()
