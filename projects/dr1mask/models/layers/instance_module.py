"""The instance prediction module of DR1Mask (Sec. 3.2.3, Table 4).

Every instance crops a D x 56 x 56 region R from the DR1Basis output F by its
box (bilinear samples at the box's bin centres, stride 4) and blends it into
one mask guided by its embedding e. Three blenders, selected by
``attention``:

``vector``   (YOLACT) e in R^D weighs the D channels: ``m = sum_d e_d R_d``.
``full``     (BlendMask) e = [t : a]: t (D*K) is a 1x1 projection D -> K
             (Eq. 7), a (K*14*14) a position-sensitive attention; the
             attention is upsampled to 56, softmaxed over K, and
             ``m = sum_k softmax(a)_k * (t * R)_k``.
``factored`` (the paper's) as ``full`` but a_k = U_k^T diag(s_k) V_k (Eq. 8)
             with shared U_k, V_k in R^{4 x 14}: 16 numbers s per instance
             instead of 784.
"""
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import ConfigType, InstanceList, reduce_mean

from ..pixel_windows import separable_grid

ATTENTIONS = ('vector', 'full', 'factored')


@MODELS.register_module()
class InstancePredictionModule(BaseModule):
    """Crop and blend the masks of DR1Mask.

    The masks come out at mask_size x mask_size over their boxes; pasting
    them into the image is :func:`~.post_processing.paste_masks_in_image`.

    Args:
        basis_channels (int): D, the channels of the basis F.
        basis_stride (int): input pixels per location of F; the detector
            passes the basis' own.
        attention (str): 'vector', 'full' or 'factored' (Table 4).
        num_bases (int): K, the projected bases of 'full' / 'factored'.
            Defaults to 4, BlendMask's choice.
        attention_size (int): spatial size of the attention. Defaults to 14.
        attention_rank (int): rank of each factored attention map (rows of
            U_k, V_k). Defaults to 4.
        mask_size (int): size of the crops and masks. Defaults to 56.
        max_masks_per_img (int): training cap on the masks per image (a
            random subset of the positives beyond it), to bound memory.
        loss_mask (dict): per-pixel loss, weighted per positive by its
            centerness target.
    """

    def __init__(self,
                 basis_channels: int,
                 basis_stride: int,
                 attention: str = 'factored',
                 num_bases: int = 4,
                 attention_size: int = 14,
                 attention_rank: int = 4,
                 mask_size: int = 56,
                 max_masks_per_img: int = 200,
                 loss_mask: ConfigType = dict(
                     type='CrossEntropyLoss',
                     use_sigmoid=True,
                     loss_weight=1.0),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if attention not in ATTENTIONS:
            raise ValueError(f'attention={attention!r}: expected one of '
                             f'{ATTENTIONS}')
        self.basis_channels = basis_channels
        self.basis_stride = basis_stride
        self.attention = attention
        self.num_bases = num_bases
        self.attention_size = attention_size
        self.attention_rank = attention_rank
        self.mask_size = mask_size
        self.max_masks_per_img = max_masks_per_img
        self.loss_mask = MODELS.build(loss_mask)
        if attention == 'factored':
            shape = (num_bases, attention_rank, attention_size)
            # Unit-scale factors: the components u_kd^T v_kd (Fig. 5) start
            # as distinct random patterns, weighted by s from the top layer.
            self.attention_u = nn.Parameter(torch.randn(shape))
            self.attention_v = nn.Parameter(torch.randn(shape))

    @property
    def embedding_channels(self) -> int:
        """Length of the per-instance embedding e the dense head emits."""
        if self.attention == 'vector':
            return self.basis_channels
        projection = self.basis_channels * self.num_bases
        if self.attention == 'full':
            return projection + self.num_bases * self.attention_size**2
        return projection + self.num_bases * self.attention_rank

    def factored_attention(self, factors: Tensor) -> Tensor:
        """Eq. 8: Q_k = U_k^T diag(s_k) V_k.

        Args:
            factors (Tensor): s, (M, K, R).

        Returns:
            Tensor: Q, (M, K, S, S), S = attention_size.
        """
        return torch.einsum('kri,mkr,krj->mkij', self.attention_u, factors,
                            self.attention_v)

    def blend(self, crops: Tensor, embeddings: Tensor) -> Tensor:
        """Merge each instance's cropped bases with its embedding.

        Args:
            crops (Tensor): R, (M, D, 56, 56).
            embeddings (Tensor): e, (M, embedding_channels).

        Returns:
            Tensor: mask logits, (M, 56, 56).
        """
        if self.attention == 'vector':
            return torch.einsum('mdhw,md->mhw', crops, embeddings)
        num, dim, k = crops.size(0), self.basis_channels, self.num_bases
        projection, attention = embeddings.split(
            [dim * k, embeddings.size(1) - dim * k], dim=1)
        bases = torch.einsum('mdhw,mkd->mkhw', crops,
                             projection.view(num, k, dim))  # Eq. 7
        if self.attention == 'full':
            size = self.attention_size
            attention = attention.view(num, k, size, size)
        else:
            attention = self.factored_attention(
                attention.view(num, k, self.attention_rank))
        attention = F.interpolate(
            attention, size=crops.shape[-2:], mode='bilinear',
            align_corners=False).softmax(dim=1)
        return (bases * attention).sum(dim=1)

    def forward(self, basis: Tensor, rois: Tensor,
                embeddings: Tensor) -> Tensor:
        """Mask logits of M instances.

        Args:
            basis (Tensor): F, (N, D, H/4, W/4).
            rois (Tensor): (M, 5), [image index, x1, y1, x2, y2] in input
                pixels.
            embeddings (Tensor): (M, embedding_channels).

        Returns:
            Tensor: (M, mask_size, mask_size).
        """
        if self.attention != 'vector':
            return self.blend(self.crop(basis, rois), embeddings)
        # The crop is linear in each channel, so the channel-weighted sum can
        # come first: one map per instance is cropped instead of D.
        image_ids = rois[:, 0].long()
        maps = basis.new_empty((len(rois), *basis.shape[-2:]))
        for i, feat in enumerate(basis):
            selected = image_ids == i
            maps[selected] = torch.einsum('md,dhw->mhw',
                                          embeddings[selected], feat)
        return crop_own_maps(maps, rois, self.mask_size, self.basis_stride)

    def crop(self, features: Tensor, rois: Tensor) -> Tensor:
        """Crops of maps on F's grid: (N, C, h, w) -> (M, C, S, S).

        See :func:`crop_on_grid`; S is ``mask_size``.

        Args:
            features (Tensor): (N, C, h, w) at the basis stride.
            rois (Tensor): (M, 5), [image index, x1, y1, x2, y2] in input
                pixels.
        """
        return crop_on_grid(features, rois, self.mask_size, self.basis_stride)

    def loss(self, basis: Tensor, positive_infos: InstanceList,
             batch_gt_instances: InstanceList) -> dict:
        """Mask loss on the positive locations of the dense head.

        Each positive is cropped by the GT box it is assigned to; its target
        is that GT mask cropped and resized to 56 x 56, and its per-pixel
        loss is weighted by its centerness target and normalised by their
        sum (BlendMask).
        """
        boxes, embeddings, targets, weights = [], [], [], []
        for info, gt in zip(positive_infos, batch_gt_instances):
            if len(info) > self.max_masks_per_img:
                info = info[torch.randperm(
                    len(info), device=basis.device)[:self.max_masks_per_img]]
            gt_inds = info.pos_assigned_gt_inds
            boxes.append(gt.bboxes[gt_inds])
            embeddings.append(info.embeddings)
            # A target depends on the GT alone: each GT with positives is
            # cropped once, not once per positive (mmdet's crop_and_resize
            # holds a full-size float copy of every mask it crops).
            used, positive_gt = torch.unique(gt_inds, return_inverse=True)
            targets.append(
                gt.masks.crop_and_resize(
                    gt.bboxes[used], (self.mask_size, ) * 2,
                    used.cpu().numpy(), device=basis.device).to_tensor(
                        dtype=basis.dtype, device=basis.device)[positive_gt])
            weights.append(info.centerness_targets)
        weights = torch.cat(weights)
        # Every rank takes part in the all-reduce, with or without positives,
        # or the ranks that have some wait for the others forever.
        avg_factor = reduce_mean(weights.sum().detach()).clamp(min=1e-6)
        if weights.numel() == 0:
            # Keep every parameter in the graph so DDP sees them all.
            zero = basis.sum() * 0 + sum(p.sum() for p in self.parameters()) * 0
            return dict(loss_mask=zero)
        logits = self(basis, bbox2roi(boxes), torch.cat(embeddings))
        pixels = logits[0].numel()
        loss_mask = self.loss_mask(
            logits,
            torch.cat(targets),
            weight=weights[:, None, None].expand_as(logits),
            avg_factor=avg_factor * pixels)
        return dict(loss_mask=loss_mask)

    def predict(self, basis: Tensor,
                results_list: InstanceList) -> List[Tensor]:
        """Mask probabilities of the detections.

        Args:
            basis (Tensor): F, (N, D, H/4, W/4).
            results_list (list[InstanceData]): per image, the detections with
                ``bboxes`` in input pixels and their ``embeddings``.

        Returns:
            list[Tensor]: per image, (n, mask_size, mask_size) probabilities
            over each detection's box.
        """
        rois = bbox2roi([results.bboxes for results in results_list])
        if rois.numel():
            embeddings = torch.cat([r.embeddings for r in results_list])
            probs = self(basis, rois, embeddings).sigmoid()
        else:
            probs = basis.new_zeros((0, self.mask_size, self.mask_size))
        return list(probs.split([len(r) for r in results_list]))


def bin_centres(rois: Tensor, size: int, stride: int, height: int,
                width: int) -> Tuple[Tensor, Tensor]:
    """Where the bin centres of each box read maps whose location j is
    input pixel ``stride * j``.

    Each box is split into size x size bins, centred at ``x1 + (i + 0.5)
    (x2 - x1) / size`` in continuous input coordinates (pixel p spans
    [p, p + 1]). Location j of the maps is pixel ``stride * j`` (DR1Basis'
    aligned upsampling, the panoptic targets), centred at ``stride * j +
    0.5``, so a centre at x reads location ``u = (x - 0.5) / stride``: where
    ``BitmapMasks.crop_and_resize`` reads the mask targets. Locations are
    clamped to the maps, as mmcv's ``RoIAlign(aligned=True)`` clamps them
    (it reads zeros beyond one location outside; boxes lie in the image).

    Args:
        rois (Tensor): (M, 5), [image index, x1, y1, x2, y2] in input
            pixels.
        size (int): S, bins per side.
        stride (int): input pixels per location of the maps.
        height (int): h, locations of the maps along y.
        width (int): w, along x.

    Returns:
        tuple[Tensor, Tensor]: u (M, S) along x, v (M, S) along y.
    """
    centres = (torch.arange(size, device=rois.device, dtype=rois.dtype) +
               0.5) / size
    x1, y1, x2, y2 = rois[:, 1:].unbind(dim=1)
    u = (x1[:, None] + (x2 - x1)[:, None] * centres - 0.5) / stride
    v = (y1[:, None] + (y2 - y1)[:, None] * centres - 0.5) / stride
    return u.clamp(0, width - 1), v.clamp(0, height - 1)


def crop_on_grid(features: Tensor, rois: Tensor, size: int,
                 stride: int) -> Tensor:
    """Bilinear crops of maps at the bin centres of boxes
    (:func:`bin_centres`).

    This is mmcv's ``RoIAlign(aligned=True, sampling_ratio=1)`` with the
    boxes moved by ``(stride - 1) / 2``, computed as one ``grid_sample``: on
    the CPU 5 x faster forward and 6 x with the backward than RoIAlign's
    loop over boxes and channels. The N images are read side by side, as
    one (C, h, N * w) map: a clamped sample of image n is a sample of that
    map at ``u + n * w`` whose neighbour in the next image has weight 0
    (tested: nothing of the next image reaches a box at the border). The
    result is a view of the sampled (C, M, S, S): the crops are not copied
    into another layout, and the maps only when N > 1.

    Args:
        features (Tensor): (N, C, h, w).
        rois (Tensor): (M, 5), [image index, x1, y1, x2, y2] in input
            pixels.
        size (int): S, bins per side.
        stride (int): input pixels per location of ``features``.

    Returns:
        Tensor: (M, C, S, S).
    """
    num_images, channels, height, width = features.shape
    u, v = bin_centres(rois, size, stride, height, width)
    side_by_side = features.permute(1, 2, 0, 3).reshape(
        1, channels, height, num_images * width)
    grid = separable_grid(
        _normalised(u + rois[:, :1] * width, num_images * width),
        _normalised(v, height))
    crops = _bilinear(side_by_side, grid.view(1, -1, size, 2))
    return crops.view(channels, -1, size, size).transpose(0, 1)


def crop_own_maps(maps: Tensor, rois: Tensor, size: int,
                  stride: int) -> Tensor:
    """:func:`crop_on_grid` of one single-channel map per box: box m reads
    ``maps[m]`` whatever its image index.

    Args:
        maps (Tensor): (M, h, w).
        rois (Tensor): (M, 5) as :func:`crop_on_grid`'s.
        size (int): S, bins per side.
        stride (int): input pixels per location of ``maps``.

    Returns:
        Tensor: (M, S, S).
    """
    height, width = maps.shape[-2:]
    u, v = bin_centres(rois, size, stride, height, width)
    grid = separable_grid(_normalised(u, width), _normalised(v, height))
    return _bilinear(maps[:, None], grid)[:, 0]


def _normalised(locations: Tensor, size: int) -> Tensor:
    """``grid_sample`` coordinates (``align_corners=False``: -1 and 1 are
    the outer edges of the first and last locations) of ``locations`` along
    an axis of ``size`` locations."""
    return (2 * locations + 1) / size - 1


def _bilinear(maps: Tensor, grid: Tensor) -> Tensor:
    """``grid_sample`` of ``maps`` at ``grid``, in ``maps``' dtype. The
    samples are taken in float32 at least: coordinates in half precision
    would be off by up to 0.1 location on a 200-location map."""
    dtype = torch.promote_types(maps.dtype, torch.float32)
    return F.grid_sample(
        maps.to(dtype),
        grid.to(dtype),
        mode='bilinear',
        padding_mode='border',
        align_corners=False).to(maps.dtype)
