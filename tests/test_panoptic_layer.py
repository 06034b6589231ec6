"""The unified panoptic layer on small handmade examples."""
import numpy as np
import torch
from mmengine.structures import InstanceData

from projects.dr1mask.models.constants import IGNORE_INDEX
from projects.dr1mask.models.layers.panoptic_layer import UnifiedPanopticLayer

T, S, D = 2, 2, 3  # things 0, 1; stuff 2, 3
X = IGNORE_INDEX


def layer(basis_stride: int = 1) -> UnifiedPanopticLayer:
    return UnifiedPanopticLayer(T, S, D, basis_stride=basis_stride)


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
        embeddings=torch.tensor([[1., 0, 0], [3., 2, 0], [0, 0, 5.]]),
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


def test_targets_read_bitmaps_in_place_and_polygons_alike():
    """The loss hands `targets` a view of the bitmap's uint8 array; it reads
    only the strided pixels, and gives what the bool copy, and the same
    shapes as polygons, give."""
    from mmdet.structures.mask import BitmapMasks, PolygonMasks
    from projects.dr1mask.models.gt_masks import mask_tensor
    h, w = 13, 18  # no multiple of the stride
    boxes = [(1, 2, 9, 11), (6, 0, 17, 7)]  # overlapping
    polygons = PolygonMasks(
        [[np.array([x1, y1, x2, y1, x2, y2, x1, y2], float)]
         for x1, y1, x2, y2 in boxes], h, w)
    bitmaps = BitmapMasks(polygons.to_ndarray().astype(np.uint8), h, w)
    sem_seg = torch.full((h, w), T + 1)
    has_positive = torch.tensor([True, True])
    panoptic = layer(basis_stride=4)
    view = mask_tensor(bitmaps)
    assert view.dtype == torch.uint8
    assert view.data_ptr() == torch.from_numpy(bitmaps.masks).data_ptr()
    expected = panoptic.targets(sem_seg, bitmaps.to_tensor(torch.bool, 'cpu'),
                                has_positive)
    assert expected.shape == (4, 5) and (expected >= S).sum() > 2
    assert torch.equal(panoptic.targets(sem_seg, view, has_positive),
                       expected)
    assert torch.equal(
        panoptic.targets(sem_seg, mask_tensor(polygons), has_positive),
        expected)
