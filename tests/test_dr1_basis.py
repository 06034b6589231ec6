"""DR1Basis (Eq. 6) and aligned upsampling (Table 5)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdet.models import FPN, ResNet
from mmdet.registry import MODELS
from projects.dr1mask.models.layers.dr1_basis import DR1Basis, aligned_upsample


def fpn_sizes(height, width, num_levels=5):
    """P3..P7 sizes of mmdet's ResNet + FPN for a padded input.

    Every stride-2 conv (3x3, padding 1) and the max pool map s to
    ceil(s / 2), so P3 = ceil(H / 8) and each coarser level halves, rounding
    up.
    """
    sizes = [(math.ceil(height / 8), math.ceil(width / 8))]
    for _ in range(num_levels - 1):
        h, w = sizes[-1]
        sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return sizes


def random_pyramid(basis, n, height, width, requires_grad=False):
    gen = torch.Generator().manual_seed(height + 7 * width)
    sizes = fpn_sizes(height, width, basis.num_levels)
    feats = [
        torch.randn(n, basis.in_channels, h, w, generator=gen)
        for h, w in sizes
    ]
    contexts = [
        torch.randn(n, basis.context_channels, h, w,
                    generator=gen).requires_grad_(requires_grad)
        for h, w in sizes
    ]
    return feats, contexts


def small_basis(**kwargs):
    kwargs.setdefault('norm_cfg', dict(type='GN', num_groups=4))
    basis = DR1Basis(in_channels=8, channels=8, **kwargs)
    basis.init_weights()
    return basis


# multiples of 4 that are not multiples of 8 (so P3 is rounded up and the
# output is 2 * P3 - 1), of 8 but not 32, of 128, tiny and COCO-large ones
SIZES = [(4, 4), (12, 20), (20, 12), (36, 44), (8, 8), (40, 24), (100, 148),
         (128, 256), (804, 1332), (800, 1216), (4, 1332)]


@pytest.mark.parametrize('height,width', SIZES)
def test_output_has_stride_4_size_of_padded_input(height, width):
    basis = small_basis()
    feats, contexts = random_pyramid(basis, 1, height, width)
    with torch.no_grad():
        out = basis(feats, contexts, out_size=(height // 4, width // 4))
    assert out.shape == (1, 8, height // 4, width // 4)
    if height % 8 == 0 and width % 8 == 0:
        with torch.no_grad():
            assert basis(feats, contexts).shape == out.shape


@pytest.mark.parametrize('height,width', [(100, 148), (36, 20), (4, 12)])
def test_on_mmdet_resnet_fpn(height, width):
    backbone = ResNet(depth=18, out_indices=(0, 1, 2, 3))
    neck = FPN([64, 128, 256, 512], 16, num_outs=5, start_level=1,
               add_extra_convs='on_output', relu_before_extra_convs=True)
    basis = DR1Basis(in_channels=16, channels=16)
    for module in (backbone, neck, basis):
        module.init_weights()
    with torch.no_grad():
        feats = neck(backbone(torch.randn(2, 3, height, width)))
        assert [f.shape[-2:] for f in feats] == fpn_sizes(height, width)
        contexts = [
            torch.randn(2, basis.context_channels, *f.shape[-2:])
            for f in feats
        ]
        out = basis(feats, contexts, out_size=(height // 4, width // 4))
    assert out.shape == (2, 16, height // 4, width // 4)


def bilinear(x, size):
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


@pytest.mark.parametrize('aligned,upsample', [(True, aligned_upsample),
                                              (False, bilinear)])
def test_matches_eq6_written_out(aligned, upsample):
    """Eq. 6 level by level; aligned=False swaps in plain bilinear
    upsampling (the Table 5 baselines)."""
    basis = small_basis(aligned=aligned)
    feats, contexts = random_pyramid(basis, 2, 44, 36)
    c = basis.channels
    f = 0
    for level in reversed(range(5)):
        x = basis.lateral_convs[level](feats[level])
        if level < 4:
            x = x + upsample(f, x.shape[-2:])
        a, b = contexts[level][:, :c], contexts[level][:, c:]
        f = basis.dr1_convs[level](x, a, b)
    expected = upsample(f, (11, 9))
    torch.testing.assert_close(basis(feats, contexts, (11, 9)), expected)


@pytest.mark.parametrize('n,size', [(4, 8), (4, 7), (1, 2), (1, 1), (5, 9)])
def test_aligned_upsample_of_a_ramp(n, size):
    # f(i, k) = 3 i + 5 k on the coarse grid, which sits on fine (2i, 2k)
    i = torch.arange(n, dtype=torch.float64)
    coarse = (3 * i[:, None] + 5 * i[None, :])[None, None]
    out = aligned_upsample(coarse, (size, size))
    j = torch.arange(size, dtype=torch.float64).clamp(max=2 * n - 2)
    expected = (1.5 * j[:, None] + 2.5 * j[None, :])[None, None]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize('height,width', [(9, 12), (8, 7), (2, 5), (1, 1),
                                          (13, 13)])
def test_aligned_upsample_inverts_stride_2_sampling(height, width):
    fine = torch.randn(2, 3, height, width, dtype=torch.float64)
    delta = torch.zeros(3, 1, 3, 3, dtype=torch.float64)
    delta[:, :, 1, 1] = 1
    # a stride-2 3x3 conv with padding 1, as in ResNet and the FPN's extra
    # levels: coarse i reads fine 2i
    coarse = F.conv2d(fine, delta, stride=2, padding=1, groups=3)
    assert coarse.shape[-2:] == (math.ceil(height / 2), math.ceil(width / 2))
    out = aligned_upsample(coarse, (height, width))
    assert out.shape == fine.shape
    torch.testing.assert_close(out[..., ::2, ::2], fine[..., ::2, ::2],
                               rtol=0, atol=0)
    if min(height, width) > 2:
        # plain bilinear x2 is off by half a fine pixel
        shifted = F.interpolate(coarse, size=(height, width),
                                mode='bilinear')
        assert not torch.allclose(shifted[..., ::2, ::2],
                                  fine[..., ::2, ::2])


def test_aligned_upsample_rejects_wrong_sizes():
    x = torch.zeros(1, 1, 3, 4)
    with pytest.raises(ValueError, match='3x4 to 7x8'):
        aligned_upsample(x, (7, 8))
    with pytest.raises(ValueError, match='3x4 to 6x6'):
        aligned_upsample(x, (6, 6))


def test_plain_mode_needs_no_contexts():
    basis = small_basis(use_a=False, use_b=False)
    assert basis.context_channels == 0
    feats, _ = random_pyramid(basis, 2, 20, 28)
    assert basis(feats, None, (5, 7)).shape == (2, 8, 5, 7)


@pytest.mark.parametrize('use_a,use_b,factor', [(True, True, 2),
                                                (True, False, 1),
                                                (False, True, 1)])
def test_context_channels(use_a, use_b, factor):
    basis = small_basis(use_a=use_a, use_b=use_b)
    assert basis.context_channels == factor * basis.channels
    feats, contexts = random_pyramid(basis, 1, 20, 28)
    assert basis(feats, contexts, (5, 7)).shape == (1, 8, 5, 7)


def test_defaults():
    basis = MODELS.build(dict(type='DR1Basis'))
    assert (basis.in_channels, basis.channels, basis.num_levels) == (256, 64,
                                                                     5)
    assert basis.context_channels == 128
    norm = basis.dr1_convs[0].norm
    assert isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == 8
    assert basis.dr1_convs[0].context_act == 'one_plus_tanh'


def test_gradients_reach_contexts_and_features():
    basis = small_basis()
    feats, contexts = random_pyramid(basis, 2, 132, 100, requires_grad=True)
    for f in feats:
        f.requires_grad_()
    out = basis(feats, contexts, (33, 25))
    (out * torch.randn_like(out)).sum().backward()
    for t in feats + contexts:
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_bad_contexts_raise():
    basis = small_basis()
    feats, contexts = random_pyramid(basis, 1, 20, 28)
    with pytest.raises(ValueError, match='expects 5 context maps'):
        basis(feats, None)
    with pytest.raises(ValueError, match='context of level 2'):
        contexts[2] = contexts[2][:, :8]
        basis(feats, contexts)
    with pytest.raises(ValueError, match='expects 5 feature levels'):
        basis(feats[:4], contexts)
