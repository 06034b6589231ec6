"""The instance prediction module: the three blenders of Table 4."""
import pytest
import torch

from mmcv.ops import RoIAlign

from projects.dr1mask.models.layers.instance_module import (InstancePredictionModule,
                                              crop_on_grid)

D, K, S, R = 8, 4, 14, 4
STRIDE = 4


def test_factored_attention_is_eq8():
    """Q_k = U_k^T diag(s_k) V_k, rebuilt explicitly for every instance."""
    module = InstancePredictionModule(D, STRIDE, attention='factored')
    factors = torch.randn(3, K, R)
    q = module.factored_attention(factors)
    assert q.shape == (3, K, S, S)
    for m in range(3):
        for k in range(K):
            expected = (module.attention_u[k].T @ torch.diag(factors[m, k])
                        @ module.attention_v[k])
            torch.testing.assert_close(q[m, k], expected)


def test_factored_embedding_is_16_attention_numbers():
    factored = InstancePredictionModule(D, STRIDE, attention='factored')
    full = InstancePredictionModule(D, STRIDE, attention='full')
    assert factored.embedding_channels - D * K == 16
    assert full.embedding_channels - D * K == 784
    assert InstancePredictionModule(D, STRIDE, attention='vector') \
        .embedding_channels == D


def test_vector_blend_is_a_channel_weighted_sum():
    module = InstancePredictionModule(D, STRIDE, attention='vector')
    crops, e = torch.randn(2, D, 56, 56), torch.randn(2, D)
    expected = (crops * e[:, :, None, None]).sum(1)
    torch.testing.assert_close(module.blend(crops, e), expected)


@pytest.mark.parametrize('attention', ['full', 'factored'])
def test_attention_blend_projects_then_weighs_with_softmax(attention):
    module = InstancePredictionModule(D, STRIDE, attention=attention)
    crops = torch.randn(2, D, 56, 56)
    e = torch.randn(2, module.embedding_channels)
    t = e[:, :D * K].view(2, K, D)
    bases = torch.einsum('mdhw,mkd->mkhw', crops, t)
    if attention == 'full':
        q = e[:, D * K:].view(2, K, S, S)
    else:
        q = module.factored_attention(e[:, D * K:].view(2, K, R))
    q = torch.nn.functional.interpolate(q, size=(56, 56), mode='bilinear')
    expected = (bases * q.softmax(1)).sum(1)
    torch.testing.assert_close(module.blend(crops, e), expected)


def test_crops_follow_the_box_at_stride_4():
    """A box over the basis' right half sees only that half's values."""
    module = InstancePredictionModule(1, STRIDE, attention='vector')
    basis = torch.zeros(1, 1, 20, 20)
    basis[..., 10:] = 1.0
    rois = torch.tensor([[0, 44., 0., 80., 80.], [0, 0., 0., 30., 80.]])
    logits = module(basis, rois, torch.ones(2, 1))
    assert torch.allclose(logits[0], torch.ones(56, 56), atol=1e-5)
    assert logits[1].abs().max() < 1e-6


def test_unknown_attention_is_named_in_the_error():
    with pytest.raises(ValueError, match="attention='vectr'"):
        InstancePredictionModule(D, STRIDE, attention='vectr')


def test_vector_mode_blends_before_cropping_with_the_same_result():
    """The crop is linear per channel: cropping one blended map per instance
    equals blending its D cropped channels (up to float32 rounding of the
    sample coordinates, which the two crops compute on maps of different
    widths)."""
    module = InstancePredictionModule(D, STRIDE, attention='vector')
    basis = torch.randn(2, D, 16, 20, requires_grad=True)
    rois = torch.tensor([[1, 4., 8., 50., 40.], [0, 0., 0., 79., 63.],
                         [1, 30., 2., 44., 60.]])
    e = torch.randn(3, D)
    expected = module.blend(module.crop(basis, rois), e)
    logits = module(basis, rois, e)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=5e-5)
    logits.sum().backward()
    assert basis.grad.abs().sum() > 0


@pytest.mark.parametrize('stride', [4, 8])
def test_crop_reads_the_basis_where_the_basis_puts_its_locations(stride):
    """A basis holding the input x (resp. y) coordinate of its locations'
    pixel centres (location j: pixel stride * j, centre stride * j + 0.5),
    cropped for a box, gives back the coordinates of the RoI's own sample
    points: the crop and the panoptic targets read F alike."""
    module = InstancePredictionModule(1, stride, attention='vector',
                                      mask_size=7)
    h, w = 20, 30
    xs = torch.arange(w) * stride + 0.5
    ys = torch.arange(h) * stride + 0.5
    basis = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)])[None]
    box = torch.tensor([[0, 13.0, 9.0, 61.0, 42.5]])
    crop = module.crop(basis, box)[0]
    x1, y1, x2, y2 = box[0, 1:].tolist()
    samples = (torch.arange(7) + 0.5) / 7
    torch.testing.assert_close(crop[0], (x1 + samples * (x2 - x1)).expand(
        7, 7), atol=1e-4, rtol=0)
    torch.testing.assert_close(crop[1], (y1 + samples * (y2 - y1))[:, None]
                               .expand(7, 7), atol=1e-4, rtol=0)


@pytest.mark.parametrize('stride', [4, 8])
def test_crop_equals_the_roi_align_it_replaces(stride):
    """The grid_sample crop is mmcv's aligned RoIAlign (one sample per bin)
    with the boxes moved by (stride - 1) / 2, the crop it replaced: values
    and gradients, for boxes of several images in any order, one image with
    none, boxes touching the border."""
    torch.manual_seed(0)
    basis = torch.randn(3, 5, 17, 23, dtype=torch.float64,
                        requires_grad=True)
    h, w = 17 * stride, 23 * stride
    rois = torch.tensor([[2, 3., 5., 40., 33.], [0, 0., 0., w, h],
                         [2, 10.5, 1., 11.5, 30.], [0, w - 9., h - 20., w, h],
                         [2, 0., 7.25, 60., 8.]], dtype=torch.float64)
    crops = crop_on_grid(basis, rois, 7, stride)
    grad = torch.randn_like(crops)
    (new_grad, ) = torch.autograd.grad(crops, basis, grad)

    shift = (stride - 1) / 2
    roi_align = RoIAlign(7, 1 / stride, sampling_ratio=1, aligned=True)
    moved = torch.cat([rois[:, :1], rois[:, 1:] + shift], dim=1)
    expected = roi_align(basis.float(), moved.float())
    (old_grad, ) = torch.autograd.grad(expected, basis, grad.float())
    assert crops.shape == (5, 5, 7, 7)
    torch.testing.assert_close(crops.float(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(new_grad, old_grad, atol=1e-5, rtol=0)
    assert new_grad[1].abs().max() == 0


def test_crop_of_no_boxes_and_of_half_precision():
    basis = torch.randn(2, 3, 8, 8)
    assert crop_on_grid(basis, torch.zeros(0, 5), 7, 4).shape == (0, 3, 7, 7)
    # Half-precision maps are sampled at float32 coordinates: on a
    # 200-location map a half-precision x is off by up to 0.06 location.
    ramp = torch.arange(200.).expand(1, 1, 4, 200)
    box = torch.tensor([[0, 700.25, 0., 703.25, 4.]])
    crop = crop_on_grid(ramp.half(), box, 3, 4)
    assert crop.dtype == torch.float16
    expected = (700.25 + (torch.arange(3) + 0.5) - 0.5) / 4
    torch.testing.assert_close(crop[0, 0, 0].float(), expected, atol=0.07,
                               rtol=0)


@pytest.mark.parametrize('width', [100, 152, 199, 304])
def test_boxes_at_the_right_border_read_nothing_of_the_next_image(width):
    """The images are read side by side: a box clamped at image 0's right
    border samples its last column, none of image 1 beside it."""
    features = torch.zeros(2, 1, 50, width)
    features[1] = 1
    right = float(width * STRIDE)
    rois = torch.tensor([[0, right - 40., 0., right, 200.],
                         [0, right - 7.3, 3., right - 0.1, 100.],
                         [0, right - 2., 0., right + 9., 10.]])
    assert crop_on_grid(features, rois, 56, STRIDE).max() == 0
    ones = crop_on_grid(features, rois + torch.tensor([1., 0, 0, 0, 0]), 56,
                        STRIDE)
    torch.testing.assert_close(ones, torch.ones_like(ones))
