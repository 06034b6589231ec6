"""The unified panoptic layer on small handmade examples."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData

from mmdet.evaluation.functional import INSTANCE_OFFSET

from projects.dr1mask.panoptic_layer import (IGNORE_INDEX,
                                             UnifiedPanopticLayer,
                                             basis_coordinates)

T, S, D = 2, 2, 3  # things 0, 1; stuff 2, 3
X = IGNORE_INDEX


def layer(**kwargs) -> UnifiedPanopticLayer:
    defaults = dict(basis_stride=1, stuff_area_thr=0,
                    suppress_outside_box=False)
    return UnifiedPanopticLayer(T, S, D, **{**defaults, **kwargs})


def test_targets_order_channels_and_ignore_what_cannot_be_learned():
    sem_seg = torch.tensor([
        [2, 2, 3, 3],
        [0, 0, 1, 1],
        [1, 1, X, 3],
        [0, 0, 2, 2],  # thing pixels of no instance: a crowd region
    ])
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, 1, :2] = True  # instance 0, label 0
    masks[1, 1, 2:] = True  # instance 1, no positive location
    masks[2, 2, :2] = True  # instance 2, label 1
    has_positive = torch.tensor([True, False, True])
    target = layer().targets(sem_seg, masks, has_positive)
    assert target.tolist() == [
        [0, 0, 1, 1],
        [S + 0, S + 0, X, X],
        [S + 1, S + 1, X, 1],
        [X, X, 0, 0],
    ]


def test_targets_sample_at_the_basis_stride():
    sem_seg = torch.full((8, 8), 2)
    sem_seg[4:, 4:] = 3
    target = layer(basis_stride=4).targets(sem_seg, torch.zeros(0, 8, 8,
                                                                dtype=bool),
                                           torch.zeros(0, dtype=bool))
    assert target.tolist() == [[0, 0], [0, 1]]


def test_thing_weights_are_the_mean_positive_embedding():
    info = InstanceData(
        param_preds=torch.tensor([[1., 0, 0], [3., 2, 0], [0, 0, 5.]]),
        pos_assigned_gt_inds=torch.tensor([0, 0, 2]))
    means, has_positive = UnifiedPanopticLayer.mean_embeddings(info, 3)
    assert has_positive.tolist() == [True, False, True]
    torch.testing.assert_close(
        means, torch.tensor([[2., 1, 0], [0, 0, 0], [0, 0, 5.]]))


def test_logits_are_w_transpose_f():
    panoptic = layer()
    basis = torch.randn(D, 5, 6)
    thing_weights = torch.randn(2, D)
    logits = panoptic.logits(basis, thing_weights)
    stuff = torch.einsum('sd,dhw->shw', panoptic.stuff_conv.weight[:, :, 0, 0],
                         basis) + panoptic.stuff_conv.bias[:, None, None]
    torch.testing.assert_close(logits[:S], stuff)
    torch.testing.assert_close(logits[S:],
                               torch.einsum('nd,dhw->nhw', thing_weights,
                                            basis))


def one_hot_logits(channels: torch.Tensor, num: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(channels, num).permute(2, 0, 1).float()


def test_ids_follow_mmdet_format():
    channels = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3], [1, 1, 3, 3]])
    results = InstanceData(labels=torch.tensor([1, 0]),
                           bboxes=torch.tensor([[0., 0, 4, 3]] * 2))
    meta = dict(img_shape=(3, 4), ori_shape=(3, 4))
    pan = layer().postprocess(one_hot_logits(channels, S + 2), results, meta)
    assert pan.sem_seg.shape == (1, 3, 4)
    assert pan.sem_seg[0].tolist() == [
        [2, 2, 1 + INSTANCE_OFFSET, 1 + INSTANCE_OFFSET],
        [3, 3, 0 + 2 * INSTANCE_OFFSET, 0 + 2 * INSTANCE_OFFSET],
        [3, 3, 0 + 2 * INSTANCE_OFFSET, 0 + 2 * INSTANCE_OFFSET],
    ]


def test_small_stuff_becomes_void_and_things_stay_in_their_box():
    channels = torch.tensor([[0, 1, 2, 2], [0, 0, 2, 2]])
    results = InstanceData(labels=torch.tensor([1]),
                           bboxes=torch.tensor([[3., 0, 4, 2]]))
    meta = dict(img_shape=(2, 4), ori_shape=(2, 4))
    pan = layer(stuff_area_thr=2, suppress_outside_box=True).postprocess(
        one_hot_logits(channels, S + 1), results, meta)
    void = T + S
    thing = 1 + INSTANCE_OFFSET
    # Column 2 lies outside the box: its pixels fall back to stuff 0.
    assert pan.sem_seg[0].tolist() == [[2, void, 2, thing], [2, 2, 2, thing]]


def test_postprocess_resizes_to_the_original_size():
    logits = torch.zeros(S, 3, 5)
    logits[1, :, 3:] = 1
    pan = layer().postprocess(logits, InstanceData(
        labels=torch.zeros(0, dtype=torch.long),
        bboxes=torch.zeros(0, 4)), dict(img_shape=(3, 5), ori_shape=(6, 10)))
    assert pan.sem_seg.shape == (1, 6, 10)
    assert (pan.sem_seg[0, :, :5] == 2).all()
    assert (pan.sem_seg[0, :, 5:] == 3).all()


def test_mask_nms_drops_a_lower_scored_duplicate():
    """Instance 2 (lower score) covers instance 1's pixels and more, with
    higher logits: without mask NMS it takes the object, with it instance 1
    keeps it and instance 2 gets nothing."""
    logits = torch.zeros(S + 2, 1, 4)
    logits[0] = 1.0  # stuff 0 everywhere, beaten where an instance is > 1
    logits[S, 0, :3] = 2.0
    logits[S + 1, 0, :] = 3.0
    results = InstanceData(labels=torch.tensor([0, 0]),
                           bboxes=torch.tensor([[0., 0, 4, 1]] * 2))
    meta = dict(img_shape=(1, 4), ori_shape=(1, 4))
    first, second = INSTANCE_OFFSET, 2 * INSTANCE_OFFSET
    kept_both = layer(mask_nms_thr=1.0).postprocess(logits.clone(), results,
                                                    meta)
    assert kept_both.sem_seg[0, 0].tolist() == [second] * 4
    deduplicated = layer(mask_nms_thr=0.5).postprocess(logits.clone(), results,
                                                       meta)
    assert deduplicated.sem_seg[0, 0].tolist() == [first] * 3 + [2]


def test_postprocess_of_an_image_shorter_than_the_stuff_classes():
    """Stuff areas are counted per channel, whatever the image height."""
    num_stuff = 10
    logits = torch.zeros(num_stuff, 3, 5)
    logits[7] = 1
    pan = UnifiedPanopticLayer(
        T, num_stuff, D, basis_stride=1, stuff_area_thr=1).postprocess(
            logits, InstanceData(labels=torch.zeros(0, dtype=torch.long),
                                 bboxes=torch.zeros(0, 4)),
            dict(img_shape=(3, 5), ori_shape=(3, 5)))
    assert (pan.sem_seg == T + 7).all()


def output_coordinates(logits, size):
    """Basis coordinates of the output pixels, at stride 1 from an input of
    the basis' size: the upsampling is then F.interpolate's
    (align_corners=False), which the references below use."""
    return [
        basis_coordinates(n_out, n_in, n_in, 1, 'cpu')
        for n_out, n_in in zip(size, logits.shape[1:])
    ]


def dense_upsampled_argmax(logits, boxes, size):
    """Reference: every channel upsampled over the whole image, -inf
    outside the boxes, argmax. Also returns the margin of the winner."""
    full = F.interpolate(logits[None], size=size, mode='bilinear',
                         align_corners=False)[0]
    ys = torch.arange(size[0])[:, None] + 0.5
    xs = torch.arange(size[1])[None] + 0.5
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        inside = (ys >= y1) & (ys <= y2) & (xs >= x1) & (xs <= x2)
        full[S + k][~inside] = float('-inf')
    top2 = full.topk(2, dim=0).values
    return full.argmax(0), top2[0] - top2[1]


@pytest.mark.parametrize('sizes', [((13, 17), (50, 70)), ((20, 12), (77, 45)),
                                   ((9, 9), (9, 9)), ((6, 30), (11, 200))])
def test_argmax_over_boxes_matches_the_dense_argmax(sizes):
    """Instance channels upsampled over their boxes only give the argmax of
    all channels upsampled over the whole image, -inf outside the boxes:
    boxes of every size, across the border, nested and overlapping."""
    (h, w), (out_h, out_w) = sizes
    gen = torch.Generator().manual_seed(h * w)
    n = 12
    logits = torch.randn(S + n, h, w, generator=gen)
    logits[S:] += 0.5  # instances win about half of their boxes
    corner = torch.rand(n, 2, generator=gen) * torch.tensor([out_w, out_h])
    extent = torch.rand(n, 2, generator=gen)**2 * torch.tensor(
        [out_w, out_h]) * 1.2
    boxes = torch.cat([corner - extent / 4, corner + extent], 1)

    channel = layer()._upsampled_argmax(
        logits, boxes, *output_coordinates(logits, (out_h, out_w)))

    expected, margin = dense_upsampled_argmax(logits, boxes, (out_h, out_w))
    assert (expected >= S).any() and (expected < S).any()
    # Rounding may only flip pixels where two channels tie.
    differ = channel != expected
    assert (margin[differ] < 1e-5).all()
    assert differ.float().mean() < 1e-3


@pytest.mark.parametrize('smoothness', [1, 3])
@pytest.mark.parametrize('sizes', [((13, 17), (50, 70)), ((20, 12), (77, 45)),
                                   ((9, 9), (9, 9))])
def test_best_stuff_matches_the_dense_max(sizes, smoothness):
    """Upsampling stuff logits only along the argmax boundaries gives the
    dense max and argmax, for noisy and for smooth logits."""
    (h, w), size = sizes
    gen = torch.Generator().manual_seed(h + smoothness)
    coarse = torch.randn(7, -(-h // smoothness), -(-w // smoothness),
                         generator=gen)
    logits = F.interpolate(coarse[None], size=(h, w), mode='bilinear')[0]

    best, channel = UnifiedPanopticLayer._best_stuff(
        logits, *output_coordinates(logits, size))

    dense = F.interpolate(logits[None], size=size, mode='bilinear',
                          align_corners=False)[0]
    top2 = dense.topk(2, dim=0).values
    torch.testing.assert_close(best, top2[0])
    differ = channel != dense.argmax(0)
    assert ((top2[0] - top2[1])[differ] < 1e-5).all()


def test_each_location_comes_back_centred_on_the_pixel_it_was_trained_on():
    """`targets` trains basis location j on pixel stride * j; the prediction
    of one location must come back centred on that pixel (interpolating with
    align_corners=False would shift it by (stride - 1) / 2)."""
    stride = 4
    panoptic = layer(basis_stride=stride)
    sem_seg = torch.full((24, 24), T)  # stuff 0 everywhere ...
    sem_seg[8, 12] = T + 1  # ... but stuff 1 on one pixel
    target = panoptic.targets(sem_seg, torch.zeros(0, 24, 24, dtype=bool),
                              torch.zeros(0, dtype=bool))
    assert (target == 1).nonzero().tolist() == [[2, 3]]
    pan = panoptic.postprocess(
        one_hot_logits(target, S), InstanceData(
            labels=torch.zeros(0, dtype=torch.long),
            bboxes=torch.zeros(0, 4)), dict(img_shape=(24, 24),
                                            ori_shape=(24, 24)))
    ys, xs = (pan.sem_seg[0] == T + 1).nonzero().float().T
    assert len(ys) > 0
    assert (ys.mean().item(), xs.mean().item()) == (8.0, 12.0)


def test_upsampling_covers_an_input_not_a_multiple_of_the_stride():
    panoptic = layer(basis_stride=4)
    logits = torch.zeros(S, 3, 4)  # ceil(10 / 4) x ceil(13 / 4)
    logits[1, -1, -1] = 1  # only the last location is stuff 1
    pan = panoptic.postprocess(logits, InstanceData(
        labels=torch.zeros(0, dtype=torch.long),
        bboxes=torch.zeros(0, 4)), dict(img_shape=(10, 13),
                                        ori_shape=(10, 13)))
    assert pan.sem_seg.shape == (1, 10, 13)
    # Location (2, 3) is pixel (8, 12), location (1, 2) pixel (4, 8): stuff 1
    # rises from zero past those, and past (8, 12) the edge is repeated.
    assert pan.sem_seg[0, 5:, 9:].eq(T + 1).all()
    assert pan.sem_seg[0, :5].eq(T).all() and pan.sem_seg[0, :, :9].eq(T).all()


def test_stride_4_upsampling_matches_interpolation_through_the_locations():
    """At stride 4, without resizing, the output is F.interpolate with
    align_corners=True through one pixel per location (pixels 0, 4, 8, ...)
    with the last location repeated."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(S, 5, 7, generator=gen)
    coords = [basis_coordinates(n * 4 - 2, n * 4 - 2, n, 4, 'cpu')
              for n in (5, 7)]
    best, channel = UnifiedPanopticLayer._best_stuff(logits, *coords)
    through = F.interpolate(
        F.pad(logits[None], (0, 1, 0, 1), mode='replicate'),
        size=(5 * 4 + 1, 7 * 4 + 1), mode='bilinear',
        align_corners=True)[0, :, :18, :26]
    torch.testing.assert_close(best, through.amax(0))
