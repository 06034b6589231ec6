"""The unified panoptic layer of DR1Mask (Sec. 3.3, Eq. 9).

One 1x1 convolution turns the basis F (D channels, stride 4) into panoptic
logits ``Y = W^T F`` with ``W = [W_stuff ; W_thing]``: the first C_stuff
columns are static parameters, the thing columns are the instances' own
embeddings. In training, each GT instance's column is the mean embedding of
the positive locations assigned to it (``e_c = sum_n e_n / N_c``); at test
time, the embeddings of the detections kept by NMS. A pixel's argmax is a
stuff class or one instance: the panoptic segmentation, with no fusion step.
"""
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.structures import InstanceData, PixelData
from torch import Tensor

from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import InstanceList, reduce_mean

from .pixel_windows import pixel_windows, sample_windows

IGNORE_INDEX = 255
# Bounds on memory: instance logits upsampled at once over their boxes, and
# boundary pixels whose stuff logits are upsampled at once.
INSTANCE_CHUNK_PIXELS = 2**24
BOUNDARY_CHUNK_PIXELS = 2**16


def basis_coordinates(size_out: int, size_in: int, size_basis: int,
                      stride: int, device: torch.device) -> Tensor:
    """(size_out,) along one axis, where each pixel of the output (original)
    image lies on the basis F, in basis locations.

    Location j of F is input pixel ``stride * j``: aligned upsampling
    centres F on the pixels that the backbone's stride-2 convolutions
    centre, and :meth:`UnifiedPanopticLayer.targets` trains location j on
    that pixel. Output pixel Y is input pixel ``(Y + 0.5) * size_in /
    size_out - 0.5``. Past the last location, the edge is repeated.
    """
    pixel = (torch.arange(size_out, device=device) + 0.5) * \
        (size_in / size_out) - 0.5
    return (pixel / stride).clamp(0, size_basis - 1)


def _grid(coords: Tensor, size: int) -> Tensor:
    """``grid_sample`` coordinates (``align_corners=True``) of the basis
    coordinates ``coords`` along an axis of ``size`` locations."""
    return coords / max(size - 1, 1) * 2 - 1


def _upsample_at(images: Tensor, coords_x: Tensor,
                 coords_y: Tensor) -> Tensor:
    """(m, *, *): each of the m single-channel ``images`` (m, h, w) sampled
    bilinearly at its own basis coordinates ``coords_y`` (m, *) x
    ``coords_x`` (m, *)."""
    return sample_windows(
        images, _grid(coords_x, images.size(2)),
        _grid(coords_y, images.size(1)), padding_mode='border',
        align_corners=True)


def _upsample_points(image: Tensor, coords_x: Tensor,
                     coords_y: Tensor) -> Tensor:
    """(C, m): ``image`` (C, h, w) sampled bilinearly at m points given by
    their basis coordinates."""
    grid = torch.stack([_grid(coords_x, image.size(2)),
                        _grid(coords_y, image.size(1))], 1)
    return F.grid_sample(image[None], grid[None, None].to(image.dtype),
                         padding_mode='border', align_corners=True)[0, :, 0]


def _in_range(index: Tensor, start: Tensor, end: Tensor) -> Tensor:
    return (index >= start) & (index < end)


@MODELS.register_module()
class UnifiedPanopticLayer(BaseModule):
    """Panoptic logits over [stuff classes ; instances] from the basis.

    Args:
        num_things (int): thing classes (labels 0..num_things - 1).
        num_stuff (int): stuff classes (labels num_things..); 53 on COCO.
        basis_channels (int): D. The instance embeddings must have D
            channels, i.e. the instance module uses vector attention
            (position-sensitive attention hurts stuff: Table 7).
        basis_stride (int): stride of F w.r.t. the input. Defaults to 4.
        loss_weight (float): weight of the per-pixel cross entropy.
        score_thr (float): detections below it get no thing channel.
        stuff_area_thr (int): stuff segments smaller than this (pixels at
            the original size) become void.
        suppress_outside_box (bool): an instance cannot take pixels outside
            its own box.
        mask_nms_thr (float): an instance whose own mask (the pixels where it
            beats every stuff class) overlaps the own mask of a higher-scored
            instance with IoU above this gets no pixel: duplicates of one
            object would otherwise split it. 1 disables it.
    """

    def __init__(self,
                 num_things: int,
                 num_stuff: int,
                 basis_channels: int,
                 basis_stride: int = 4,
                 loss_weight: float = 1.0,
                 score_thr: float = 0.4,
                 stuff_area_thr: int = 4096,
                 suppress_outside_box: bool = True,
                 mask_nms_thr: float = 0.5,
                 init_cfg=dict(type='Normal', layer='Conv2d', std=0.01)
                 ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_things = num_things
        self.num_stuff = num_stuff
        self.basis_channels = basis_channels
        self.basis_stride = basis_stride
        self.loss_weight = loss_weight
        self.score_thr = score_thr
        self.stuff_area_thr = stuff_area_thr
        self.suppress_outside_box = suppress_outside_box
        self.mask_nms_thr = mask_nms_thr
        self.stuff_conv = nn.Conv2d(basis_channels, num_stuff, 1)

    def logits(self, basis: Tensor, thing_weights: Tensor) -> Tensor:
        """Y = W^T F for one image.

        Args:
            basis (Tensor): F, (D, h, w).
            thing_weights (Tensor): W_thing, (n, D).

        Returns:
            Tensor: (num_stuff + n, h, w).
        """
        stuff = self.stuff_conv(basis[None])[0]
        things = torch.einsum('nd,dhw->nhw', thing_weights, basis)
        return torch.cat([stuff, things])

    def _check_embeddings(self, embeddings: Tensor) -> None:
        if embeddings.size(-1) != self.basis_channels:
            raise ValueError(
                f'UnifiedPanopticLayer needs {self.basis_channels}-channel '
                f'(vector) instance embeddings, got {embeddings.size(-1)}: '
                "use the instance module's attention='vector'")

    @staticmethod
    def mean_embeddings(positive_info: InstanceData,
                        num_gts: int) -> Tuple[Tensor, Tensor]:
        """Eq. 9's columns: the mean embedding of each GT instance.

        Returns:
            tuple: ``means`` (num_gts, E) and ``has_positive`` (num_gts,)
            bool; an instance with no positive location has no embedding.
        """
        embeddings = positive_info.param_preds
        gt_inds = positive_info.pos_assigned_gt_inds
        sums = embeddings.new_zeros((num_gts, embeddings.size(1)))
        sums.index_add_(0, gt_inds, embeddings)
        counts = torch.bincount(gt_inds, minlength=num_gts)
        return sums / counts.clamp(min=1)[:, None].to(sums), counts > 0

    def targets(self, sem_seg: Tensor, masks: Tensor,
                has_positive: Tensor) -> Tensor:
        """Channel index of every pixel of one image at the basis stride.

        Args:
            sem_seg (Tensor): (H, W) things 0..T-1, stuff T..T+S-1, 255
                ignored (void), at the padded input size.
            masks (Tensor): (n, H', W') bool GT instance masks.
            has_positive (Tensor): (n,) bool.

        Returns:
            Tensor: (h, w) long: stuff ``c`` is channel ``c - T``, instance
            ``j`` with a positive is channel ``S + (its rank among those)``;
            void, crowd (thing pixels of no instance) and instances with no
            positive are 255.
        """
        target = torch.full_like(sem_seg, IGNORE_INDEX, dtype=torch.long)
        is_stuff = (sem_seg >= self.num_things) & (sem_seg != IGNORE_INDEX)
        target[is_stuff] = sem_seg[is_stuff].long() - self.num_things
        channel = torch.where(has_positive,
                              self.num_stuff + has_positive.cumsum(0) - 1,
                              IGNORE_INDEX)
        if len(masks):
            mask_h, mask_w = masks.shape[-2:]
            covered = masks.any(0)
            instance = masks.to(torch.uint8).argmax(0)
            region = target[:mask_h, :mask_w]
            region[covered] = channel[instance[covered]]
        return target[::self.basis_stride, ::self.basis_stride]

    def loss(self, basis: Tensor, positive_infos: InstanceList,
             batch_data_samples: SampleList) -> dict:
        """Per-pixel cross entropy over [stuff ; instances of the image]."""
        losses, valid = [], []
        for feat, info, sample in zip(basis, positive_infos,
                                      batch_data_samples):
            self._check_embeddings(info.param_preds)
            gt = sample.gt_instances
            means, has_positive = self.mean_embeddings(info, len(gt))
            masks = gt.masks.to_tensor(torch.bool, basis.device)
            target = self.targets(sample.gt_sem_seg.sem_seg[0].to(basis.device),
                                  masks, has_positive)
            target = target[:feat.size(1), :feat.size(2)]
            logits = self.logits(feat[:, :target.size(0), :target.size(1)],
                                 means[has_positive])
            losses.append(
                F.cross_entropy(
                    logits[None], target[None], ignore_index=IGNORE_INDEX,
                    reduction='sum'))
            valid.append((target != IGNORE_INDEX).sum())
        # The mean over ranks: DDP then averages sum / mean, which is the
        # loss of the whole distributed batch (FCOS normalises by num_pos so).
        num_valid = reduce_mean(torch.stack(valid).sum().float()).clamp(min=1)
        return dict(
            loss_panoptic=self.loss_weight * torch.stack(losses).sum() /
            num_valid)

    def predict(self, basis: Tensor, results_list: InstanceList,
                batch_img_metas: List[dict]) -> List[PixelData]:
        """Panoptic segmentation of each image at its original size.

        Args:
            basis (Tensor): F, (N, D, h, w).
            results_list (list[InstanceData]): the detections of each image,
                ``bboxes`` in input pixels, ``scores``, ``labels`` and
                ``param_preds`` (their embeddings).
            batch_img_metas (list[dict]): ``img_shape``, ``ori_shape``,
                ``scale_factor``.

        Returns:
            list[PixelData]: ``sem_seg`` (1, H, W) int64 ids in mmdet's
            format: stuff ``label``, instance ``k`` (1-based, in score order)
            ``label + k * INSTANCE_OFFSET``, void ``num_things + num_stuff``.
        """
        return [
            self._predict_single(feat, results, meta)
            for feat, results, meta in zip(basis, results_list,
                                           batch_img_metas)
        ]

    def _predict_single(self, basis: Tensor, results: InstanceData,
                        img_meta: dict) -> PixelData:
        results = results[results.scores >= self.score_thr]
        self._check_embeddings(results.param_preds)
        img_h, img_w = img_meta['img_shape'][:2]
        stride = self.basis_stride
        # Drop the padding before anything is resized.
        logits = self.logits(
            basis[:, :-(-img_h // stride), :-(-img_w // stride)],
            results.param_preds)
        return self.postprocess(logits, results, img_meta)

    def postprocess(self, logits: Tensor, results: InstanceData,
                    img_meta: dict) -> PixelData:
        """Panoptic ids from logits, as one batched tensor computation.

        Args:
            logits (Tensor): (num_stuff + n, h, w) over the unpadded image
                at the basis stride.
            results (InstanceData): the n instances of the thing channels,
                with ``labels`` and ``bboxes`` (input pixels), in descending
                score order.
            img_meta (dict): ``img_shape`` and ``ori_shape``.

        Returns:
            PixelData: ``sem_seg`` (1, H, W) at ``ori_shape``: instance
            ``k`` (1-based channel order) is ``label + k * INSTANCE_OFFSET``,
            stuff its bare label, void ``num_things + num_stuff``.
        """
        img_h, img_w = img_meta['img_shape'][:2]
        ori_h, ori_w = img_meta['ori_shape'][:2]
        void = self.num_things + self.num_stuff
        instance_ids = results.labels + INSTANCE_OFFSET * torch.arange(
            1, len(results) + 1, device=logits.device)
        boxes = results.bboxes
        if self.mask_nms_thr < 1 and len(results) > 1:
            # Duplicates are found at the basis stride (16x fewer pixels) and
            # lose their channels before the upsampling.
            keep = ~self._duplicates(logits, boxes)
            logits = torch.cat(
                [logits[:self.num_stuff], logits[self.num_stuff:][keep]])
            instance_ids, boxes = instance_ids[keep], boxes[keep]
        if self.suppress_outside_box:
            boxes = boxes * boxes.new_tensor([ori_w / img_w, ori_h / img_h] * 2)
        else:
            boxes = boxes.new_tensor([[0, 0, ori_w, ori_h]]).expand_as(boxes)
        stride = self.basis_stride
        coords = [
            basis_coordinates(n_out, n_in, n_basis, stride, logits.device)
            for n_out, n_in, n_basis in zip((ori_h, ori_w), (img_h, img_w),
                                            logits.shape[1:])
        ]
        channel = self._upsampled_argmax(logits, boxes, *coords)

        stuff_area = torch.bincount(
            channel.flatten(), minlength=self.num_stuff)[:self.num_stuff]
        stuff_ids = torch.arange(self.num_things, void, device=channel.device)
        stuff_ids[stuff_area < self.stuff_area_thr] = void
        ids = torch.cat([stuff_ids, instance_ids])[channel]
        return PixelData(sem_seg=ids[None])

    def _upsampled_argmax(self, logits: Tensor, boxes: Tensor,
                          coords_y: Tensor, coords_x: Tensor) -> Tensor:
        """(H, W) argmax over the channels of ``logits`` (num_stuff + n, h,
        w) sampled bilinearly at the basis coordinates ``coords_y`` (H,) x
        ``coords_x`` (W,) of the output pixels (:func:`basis_coordinates`),
        each of the n instance channels at -inf outside its box (``boxes``
        (n, 4), output pixels).

        An instance channel is upsampled only over its box, so the cost
        grows with the boxes' area, not with n x H x W; stuff channels only
        near boundaries (:meth:`_best_stuff`). Ties go to the lower channel,
        as in ``argmax``.
        """
        stuff_best, channel = self._best_stuff(logits[:self.num_stuff],
                                               coords_y, coords_x)
        if len(boxes) == 0:
            return channel
        thing_best, instance = self._best_instance(logits[self.num_stuff:],
                                                   boxes, coords_y, coords_x)
        return torch.where(thing_best > stuff_best, self.num_stuff + instance,
                           channel)

    @staticmethod
    def _best_stuff(logits: Tensor, coords_y: Tensor,
                    coords_x: Tensor) -> Tuple[Tensor, Tensor]:
        """Per output pixel, the highest upsampled stuff logit and its
        channel: (H, W) float and (H, W) long, from ``logits`` (num_stuff,
        h, w).

        An upsampled pixel is a convex combination of its (up to) four
        source locations, so where these share their argmax c, c wins the
        pixel and its value there is the upsampled maximum over the
        channels. Only the other pixels, along the boundaries of the
        low-resolution argmax, need every channel upsampled.
        """
        best, channel = logits.max(0)
        sizes = logits.shape[1:]
        (top, bottom), (left, right) = (
            (coords.long(), (coords.long() + 1).clamp(max=size - 1))
            for coords, size in zip((coords_y, coords_x), sizes))
        upper, lower = channel[top], channel[bottom]
        channel = upper[:, left]
        boundary = (channel != upper[:, right]) \
            | (channel != lower[:, left]) | (channel != lower[:, right])
        best = _upsample_at(best[None], coords_x[None], coords_y[None])[0]
        ys, xs = boundary.nonzero(as_tuple=True)
        for y, x in zip(ys.split(BOUNDARY_CHUNK_PIXELS),
                        xs.split(BOUNDARY_CHUNK_PIXELS)):
            best[y, x], channel[y, x] = _upsample_points(
                logits, coords_x[x], coords_y[y]).max(0)
        return best, channel

    @staticmethod
    def _best_instance(logits: Tensor, boxes: Tensor, coords_y: Tensor,
                       coords_x: Tensor) -> Tuple[Tensor, Tensor]:
        """Per output pixel, the highest upsampled instance logit among the
        boxes holding the pixel's centre, and its instance (the first one on
        ties): (H, W) float, -inf where no box is, and (H, W) long.

        Args:
            logits (Tensor): (n, h, w), one channel per instance.
            boxes (Tensor): (n, 4) in output pixels.
            coords_y, coords_x (Tensor): (H,), (W,) basis coordinates of the
                output pixels.
        """
        size = (len(coords_y), len(coords_x))
        img_h, img_w = size
        # Pixel x lies in a box when x + 0.5 is in [x1, x2].
        start = (boxes[:, :2] - 0.5).ceil().clamp(min=0).long()
        end = torch.minimum((boxes[:, 2:] - 0.5).floor().long() + 1,
                            start.new_tensor([img_w, img_h]))
        best = logits.new_full((img_h * img_w, ), float('-inf'))
        windows = []
        for part, xs, ys in pixel_windows(start, end, size,
                                          INSTANCE_CHUNK_PIXELS):
            values = _upsample_at(logits[part], coords_x[xs], coords_y[ys])
            inside = _in_range(ys, start[part, 1:], end[part, 1:])[:, :, None] \
                & _in_range(xs, start[part, :1], end[part, :1])[:, None]
            values.masked_fill_(~inside, float('-inf'))
            pixels = ys[:, :, None] * img_w + xs[:, None]
            best.scatter_reduce_(0, pixels.flatten(), values.flatten(), 'amax')
            windows.append((part, pixels, values))
        # n stands for "no instance" and loses every 'amin'.
        none = len(logits)
        instance = torch.full_like(best, none, dtype=torch.long)
        for part, pixels, values in windows:
            wins = (values == best.take(pixels)) & (values > float('-inf'))
            instance.scatter_reduce_(
                0, pixels.flatten(),
                torch.where(wins, part[:, None, None], none).flatten(),
                'amin')
        return best.view(size), instance.view(size)

    def _duplicates(self, logits: Tensor, boxes: Tensor) -> Tensor:
        """(n,) bool: instances whose own mask overlaps that of an earlier
        (higher-scored) one with IoU > ``mask_nms_thr``, by one matrix
        product over all pairs.

        Args:
            logits (Tensor): (num_stuff + n, h, w).
            boxes (Tensor): (n, 4) in input pixels.
        """
        stuff, things = logits[:self.num_stuff], logits[self.num_stuff:]
        # Location j is input pixel stride * j (see basis_coordinates).
        ys, xs = (torch.arange(size, device=logits.device)[:, None] *
                  self.basis_stride for size in logits.shape[1:])
        inside_y = (ys >= boxes[:, 1]) & (ys <= boxes[:, 3])
        inside_x = (xs >= boxes[:, 0]) & (xs <= boxes[:, 2])
        own = (things > stuff.amax(0)) & inside_y.T[:, :, None] \
            & inside_x.T[:, None, :]
        own = own.flatten(1).float()
        intersection = own @ own.T
        area = own.sum(1)
        iou = intersection / (area[:, None] + area[None] - intersection).clamp(
            min=1)
        return (iou.triu(diagonal=1) > self.mask_nms_thr).any(0)
