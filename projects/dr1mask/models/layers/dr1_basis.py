"""DR1Basis, the bottom-up branch of DR1Mask (Sec. 3.2.2, Eq. 6, Fig. 3).

An inverted pyramid over the FPN levels P7..P3 that merges each level with the
instance-aware context maps ``C_l = [A_l, B_l]`` from the top layer of the
box tower through a :class:`DR1Conv`, and returns the basis features ``F`` at
stride 4 that the instance and panoptic predictions read.

Upsampling between levels is the paper's "aligned upsampling" (Table 5),
:func:`aligned_upsample`, which lets the input be padded to a multiple of 4
only instead of 128 (the stride of P7).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmdet.registry import MODELS
from mmdet.utils import ConfigType, MultiConfig
from .dr1_conv import DR1Conv


def aligned_upsample(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """Upsample by 2 onto the positions a stride-2 convolution sampled.

    A stride-2 3x3 convolution with padding 1 (ResNet's, and the FPN's extra
    levels) centres coarse index ``i`` on fine index ``2 * i``, and a finer
    level of size ``s`` has a coarser one of size ``ceil(s / 2)``. So along
    each axis, with ``n`` coarse samples::

        out[2i] = x[i],  out[2i + 1] = (x[i] + x[i + 1]) / 2,
        out[2n - 1] = x[n - 1]  (only when size is 2n: replicated edge)

    i.e. bilinear interpolation with ``align_corners=True`` to ``2n - 1``,
    then one replicated row / column at the bottom / right when the finer
    level is ``2n`` long. Unlike ``F.interpolate(scale_factor=2)`` (which
    puts coarse ``i`` at fine ``2i + 0.5``) or mmdet's ``aligned_bilinear``
    (fine ``2i + 1``), nothing is shifted against the backbone's sampling,
    which is what makes padding to a multiple of 4 enough.

    Args:
        x (Tensor): Coarse features, shape (N, C, h, w).
        size (tuple[int, int]): The finer level's (H, W); each must be
            ``2 * h`` or ``2 * h - 1`` (resp. ``w``).

    Returns:
        Tensor: Shape (N, C, H, W).
    """
    h, w = x.shape[-2:]
    out_h, out_w = size
    if out_h not in (2 * h - 1, 2 * h) or out_w not in (2 * w - 1, 2 * w):
        raise ValueError(
            f'aligned_upsample: cannot upsample {h}x{w} to {out_h}x{out_w}; '
            f'the target must be {2 * h - 1} or {2 * h} by {2 * w - 1} or '
            f'{2 * w} (a stride-2 convolution maps s to ceil(s / 2))')
    x = F.interpolate(
        x, size=(2 * h - 1, 2 * w - 1), mode='bilinear', align_corners=True)
    pad_h, pad_w = out_h - (2 * h - 1), out_w - (2 * w - 1)
    # An ONNX export records the pad even where this trace's amounts are 0:
    # they are computed from the input size, which the graph leaves dynamic.
    if pad_h or pad_w or torch.onnx.is_in_onnx_export():
        x = F.pad(x, (0, pad_w, 0, pad_h), mode='replicate')
    return x


@MODELS.register_module()
class DR1Basis(BaseModule):
    """The DR1Basis neck: an inverted pyramid of DR1Convs (Eq. 6).

    For l = 7, ..., 3 (index ``num_levels - 1`` down to 0)::

        F_l = DR1Conv_{A_l, B_l}(Conv3x3(P_l) + up2(F_{l+1})),  F_8 = 0
        F   = up2(F_3)                                          (stride 4)

    where ``up2`` is :func:`aligned_upsample` and ``A_l, B_l`` are ``C_l``
    split evenly along the channels (A first). ``Conv3x3`` reduces the FPN
    width to ``channels`` and the width stays constant after (Sec. 3.2.2).
    Each level has its own lateral conv and DR1Conv.

    Choices the paper leaves open:

    - The lateral ``Conv3x3`` is a plain linear conv with bias, no norm or
      activation, as Eq. 6 writes it and as FPN laterals are: the merged sum
      is normalised once, by the DR1Conv's norm after its ``* B``, so a ReLU
      here would only clip the negative half of ``P_l`` before ``A_l`` can
      weigh it, and a norm there would cost a pass per level only to be
      followed by another.
    - Each DR1Conv is ``Conv3x3 -> * B -> norm -> ReLU``. The norm defaults
      to GroupNorm with 8 groups: it trains on one GPU with 1-2 images per
      GPU (BN statistics would be noisy there, and SyncBN needs several
      processes), and 8 groups keep 4 channels per group at the paper's
      width 32 and 8 at 64 (the FCOS head's 32 groups would leave 1 or 2).
    - ``channels`` defaults to 64, the paper's width for panoptic
      segmentation (Table 6; 32 suffices for instances).

    ``use_a=False, use_b=False`` gives the "w/o A, B" baseline of Tables 1
    and 2, a plain FPN-like basis that needs no contexts. ``aligned=False``
    upsamples with plain bilinear interpolation to the finer size instead,
    the baselines of Table 5 (inputs padded to 32 or 128).

    Args:
        in_channels (int): Channels of the FPN levels. Defaults to 256.
        channels (int): Width D of the basis. Defaults to 64.
        num_levels (int): Number of FPN levels, finest first (P3..P7).
            Defaults to 5.
        finest_stride (int): Stride of the finest level read (P3: 8); F is
            at half of it. Defaults to 8.
        context_act (str): Activation of A and B, see :class:`DR1Conv`.
            Defaults to ``'one_plus_tanh'``, the best of the three on the
            toy set (docs/fidelity.md, design choices).
        use_a (bool): Use the input factors A. Defaults to True.
        use_b (bool): Use the output factors B. Defaults to True.
        aligned (bool): Aligned upsampling (Table 5). Defaults to True.
        norm_cfg (dict): Norm after each DR1Conv's ``* B``. Defaults to
            ``dict(type='GN', num_groups=8, requires_grad=True)``.
        act_cfg (dict): Activation after the norm. Defaults to ReLU.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to Kaiming (fan_out, normal) on every convolution.
    """

    def __init__(self,
                 in_channels: int = 256,
                 channels: int = 64,
                 num_levels: int = 5,
                 finest_stride: int = 8,
                 context_act: str = 'one_plus_tanh',
                 use_a: bool = True,
                 use_b: bool = True,
                 aligned: bool = True,
                 norm_cfg: ConfigType = dict(
                     type='GN', num_groups=8, requires_grad=True),
                 act_cfg: ConfigType = dict(type='ReLU', inplace=True),
                 init_cfg: MultiConfig = dict(type='Kaiming',
                                              layer='Conv2d')) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.channels = channels
        self.num_levels = num_levels
        self.stride = finest_stride // 2
        self.use_a = use_a
        self.use_b = use_b
        self.aligned = aligned
        self.lateral_convs = nn.ModuleList(
            nn.Conv2d(in_channels, channels, 3, padding=1)
            for _ in range(num_levels))
        self.dr1_convs = nn.ModuleList(
            DR1Conv(
                channels,
                channels,
                3,
                norm_cfg=norm_cfg,
                act_cfg=act_cfg,
                use_a=use_a,
                use_b=use_b,
                context_act=context_act) for _ in range(num_levels))

    @property
    def context_channels(self) -> int:
        """int: Channels of each context map ``C_l`` the head must emit.

        ``2 * channels`` with A and B, ``channels`` with one of them, 0 in
        plain mode.
        """
        return self.channels * (int(self.use_a) + int(self.use_b))

    def output_size(self, input_size: Tuple[int, int]) -> Tuple[int, int]:
        """(H, W) of F for a padded input of ``input_size``: the input is
        padded to a multiple of the stride (Table 5), so this is exact."""
        return input_size[0] // self.stride, input_size[1] // self.stride

    def forward(self,
                feats: Sequence[Tensor],
                contexts: Optional[Sequence[Tensor]] = None,
                out_size: Optional[Tuple[int, int]] = None) -> Tensor:
        """Compute the basis features F (Eq. 6).

        Args:
            feats (Sequence[Tensor]): FPN levels P3..P7, finest first, each
                (N, in_channels, H_l, W_l) with H_{l+1} = ceil(H_l / 2) (as
                the stride-2 convolutions of ResNet and FPN produce).
            contexts (Sequence[Tensor], optional): Context maps C3..C7, each
                (N, context_channels, H_l, W_l), holding ``[A_l, B_l]`` along
                the channels (only the factors in use). Ignored, and may be
                None, in plain mode.
            out_size (tuple[int, int], optional): (H, W) of the output, i.e.
                the padded input size // 4; each must be ``2 * H_3`` or
                ``2 * H_3 - 1`` (resp. W). None gives ``2 * H_3 x 2 * W_3``,
                right when the input is padded to a multiple of 8.

        Returns:
            Tensor: F, shape (N, channels, H, W) at stride 4.
        """
        if len(feats) != self.num_levels:
            raise ValueError(f'DR1Basis expects {self.num_levels} feature '
                             f'levels, got {len(feats)}')
        if self.context_channels and (contexts is None
                                      or len(contexts) != self.num_levels):
            raise ValueError(
                f'DR1Basis(use_a={self.use_a}, use_b={self.use_b}) expects '
                f'{self.num_levels} context maps, got '
                f'{None if contexts is None else len(contexts)}')
        f = None
        for level in reversed(range(self.num_levels)):
            x = self.lateral_convs[level](feats[level])
            if f is not None:
                # The lateral output is a fresh tensor whose backward keeps
                # only its input, so the sum may reuse its buffer.
                x.add_(self._upsample(f, x.shape[-2:]))
            a, b = self._split_context(contexts, level, x)
            f = self.dr1_convs[level](x, a, b)
        h, w = f.shape[-2:]
        return self._upsample(f, out_size or (2 * h, 2 * w))

    def _upsample(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        if self.aligned:
            return aligned_upsample(x, size)
        return F.interpolate(
            x, size=size, mode='bilinear', align_corners=False)

    def _split_context(
        self, contexts: Optional[Sequence[Tensor]], level: int, x: Tensor
    ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """Split ``C_l`` into ``(A_l, B_l)``, None for a factor not in use."""
        if not self.context_channels:
            return None, None
        context = contexts[level]
        expected = (x.shape[0], self.context_channels, *x.shape[-2:])
        if tuple(context.shape) != expected:
            raise ValueError(f'DR1Basis: context of level {level} has shape '
                             f'{tuple(context.shape)}, expected {expected}')
        if self.use_a and self.use_b:
            return tuple(context.split(self.channels, dim=1))
        return (context, None) if self.use_a else (None, context)
