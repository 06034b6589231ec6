"""DR1Mask's post-processing functions on small handmade examples, and held
against the dense computations and mmdet's paste they replace."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData

from mmdet.evaluation.functional import INSTANCE_OFFSET

from projects.dr1mask.models.layers.panoptic_layer import UnifiedPanopticLayer
from projects.dr1mask.models.post_processing import (PanopticView, basis_coordinates,
                                              best_stuff,
                                              panoptic_segmentation,
                                              paste_masks_in_image,
                                              upsampled_argmax)

T, S, D = 2, 2, 3  # things 0, 1; stuff 2, 3
NO_INSTANCES = InstanceData(labels=torch.zeros(0, dtype=torch.long),
                            bboxes=torch.zeros(0, 4))


def segment(logits, results, img_shape, out_shape=None, num_stuff=S,
            **options):
    """:func:`panoptic_segmentation` at stride 1, keeping small stuff and
    letting instances reach beyond their boxes, unless ``options`` say
    otherwise."""
    options = {**dict(stride=1, mask_overlap=0.5, stuff_area_limit=0,
                      suppress_outside_box=False), **options}
    return panoptic_segmentation(logits, results.labels, results.bboxes,
                                 img_shape, out_shape or img_shape, T,
                                 num_stuff, **options)


@pytest.mark.parametrize('mask_thr', [0.5, 0.2])
@pytest.mark.parametrize('img_shape', [(37, 61), (300, 200), (128, 416)])
def test_windowed_paste_equals_mmdet_full_image_paste(img_shape, mask_thr):
    """Pasting over windows around the boxes gives exactly the pixels of
    mmdet's full-image paste, for boxes inside and across the border of the
    image."""
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import \
        _do_paste_mask
    img_h, img_w = img_shape
    gen = torch.Generator().manual_seed(img_h)
    corner = torch.rand(40, 2, generator=gen) * torch.tensor([img_w, img_h])
    size = torch.rand(40, 2, generator=gen)**2 * torch.tensor(
        [img_w, img_h]) + 0.5
    boxes = torch.cat([corner, corner + size], 1)
    boxes = torch.minimum(boxes, boxes.new_tensor([img_w, img_h] * 2))
    probs = torch.rand(len(boxes), 56, 56, generator=gen)
    # Full masks reach farthest beyond their boxes: half a mask pixel, where
    # the samples fall below 0.5.
    probs[::2] = 1

    masks = paste_masks_in_image(probs, boxes, img_shape, mask_thr)

    expected = _do_paste_mask(
        probs[:, None], boxes, img_h, img_w, skip_empty=False)[0] >= mask_thr
    assert masks.dtype == torch.bool
    assert torch.equal(masks, expected)


def test_paste_of_a_zero_width_box_is_empty():
    boxes = torch.tensor([[10., 5., 10., 20.], [2., 2., 30., 30.]])
    masks = paste_masks_in_image(torch.ones(2, 56, 56), boxes, (40, 40), 0.5)
    assert not masks[0].any()
    assert masks[1, 2:30, 2:30].all() and masks[1].sum() == 28 * 28


def one_hot_logits(channels: torch.Tensor, num: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(channels, num).permute(2, 0, 1).float()


def test_ids_follow_mmdet_format():
    channels = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3], [1, 1, 3, 3]])
    results = InstanceData(labels=torch.tensor([1, 0]),
                           bboxes=torch.tensor([[0., 0, 4, 3]] * 2))
    ids = segment(one_hot_logits(channels, S + 2), results, (3, 4))
    assert ids.shape == (3, 4)
    assert ids.tolist() == [
        [2, 2, 1 + INSTANCE_OFFSET, 1 + INSTANCE_OFFSET],
        [3, 3, 0 + 2 * INSTANCE_OFFSET, 0 + 2 * INSTANCE_OFFSET],
        [3, 3, 0 + 2 * INSTANCE_OFFSET, 0 + 2 * INSTANCE_OFFSET],
    ]


def test_small_stuff_becomes_void_and_things_stay_in_their_box():
    channels = torch.tensor([[0, 1, 2, 2], [0, 0, 2, 2]])
    results = InstanceData(labels=torch.tensor([1]),
                           bboxes=torch.tensor([[3., 0, 4, 2]]))
    ids = segment(one_hot_logits(channels, S + 1), results, (2, 4),
                  stuff_area_limit=2, suppress_outside_box=True)
    void = T + S
    thing = 1 + INSTANCE_OFFSET
    # Column 2 lies outside the box: its pixels fall back to stuff 0.
    assert ids.tolist() == [[2, void, 2, thing], [2, 2, 2, thing]]


def test_segmentation_is_resized_to_the_output_size():
    logits = torch.zeros(S, 3, 5)
    logits[1, :, 3:] = 1
    ids = segment(logits, NO_INSTANCES, (3, 5), out_shape=(6, 10))
    assert ids.shape == (6, 10)
    assert (ids[:, :5] == 2).all()
    assert (ids[:, 5:] == 3).all()


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
    first, second = INSTANCE_OFFSET, 2 * INSTANCE_OFFSET
    kept_both = segment(logits.clone(), results, (1, 4), mask_overlap=1.0)
    assert kept_both[0].tolist() == [second] * 4
    deduplicated = segment(logits.clone(), results, (1, 4), mask_overlap=0.5)
    assert deduplicated[0].tolist() == [first] * 3 + [2]


def test_segmentation_of_an_image_shorter_than_the_stuff_classes():
    """Stuff areas are counted per channel, whatever the image height."""
    num_stuff = 10
    logits = torch.zeros(num_stuff, 3, 5)
    logits[7] = 1
    ids = segment(logits, NO_INSTANCES, (3, 5), num_stuff=num_stuff,
                  stuff_area_limit=1)
    assert (ids == T + 7).all()


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

    channel = upsampled_argmax(
        [PanopticView(logits, *output_coordinates(logits, (out_h, out_w)))],
        boxes, S)

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

    best, channel = best_stuff(
        [PanopticView(logits, *output_coordinates(logits, size))])

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
    panoptic = UnifiedPanopticLayer(T, S, D, basis_stride=stride)
    sem_seg = torch.full((24, 24), T)  # stuff 0 everywhere ...
    sem_seg[8, 12] = T + 1  # ... but stuff 1 on one pixel
    target = panoptic.targets(sem_seg, torch.zeros(0, 24, 24, dtype=bool),
                              torch.zeros(0, dtype=bool))
    assert (target == 1).nonzero().tolist() == [[2, 3]]
    ids = segment(one_hot_logits(target, S), NO_INSTANCES, (24, 24),
                  stride=stride)
    ys, xs = (ids == T + 1).nonzero().float().T
    assert len(ys) > 0
    assert (ys.mean().item(), xs.mean().item()) == (8.0, 12.0)


def test_upsampling_covers_an_input_not_a_multiple_of_the_stride():
    logits = torch.zeros(S, 3, 4)  # ceil(10 / 4) x ceil(13 / 4)
    logits[1, -1, -1] = 1  # only the last location is stuff 1
    ids = segment(logits, NO_INSTANCES, (10, 13), stride=4)
    assert ids.shape == (10, 13)
    # Location (2, 3) is pixel (8, 12), location (1, 2) pixel (4, 8): stuff 1
    # rises from zero past those, and past (8, 12) the edge is repeated.
    assert ids[5:, 9:].eq(T + 1).all()
    assert ids[:5].eq(T).all() and ids[:, :9].eq(T).all()


def test_stride_4_upsampling_matches_interpolation_through_the_locations():
    """At stride 4, without resizing, the output is F.interpolate with
    align_corners=True through one pixel per location (pixels 0, 4, 8, ...)
    with the last location repeated."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(S, 5, 7, generator=gen)
    coords = [basis_coordinates(n * 4 - 2, n * 4 - 2, n, 4, 'cpu')
              for n in (5, 7)]
    best, channel = best_stuff([PanopticView(logits, *coords)])
    through = F.interpolate(
        F.pad(logits[None], (0, 1, 0, 1), mode='replicate'),
        size=(5 * 4 + 1, 7 * 4 + 1), mode='bilinear',
        align_corners=True)[0, :, :18, :26]
    torch.testing.assert_close(best, through.amax(0))
