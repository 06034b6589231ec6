"""DR1Mask's post-processing: pure functions from network outputs to masks
and panoptic ids.

Nothing here is learnt. Each function takes tensors and explicit thresholds
(the detector reads them from its ``test_cfg``) and returns tensors; every
step is batched over instances and pixels.

Coordinates. Location j of the basis F (stride s = 4) is input pixel
``s * j``: aligned upsampling centres F on the pixels that the backbone's
stride-2 convolutions centre, and the panoptic targets train location j on
that pixel. Output pixel Y of an image resized from the input is input pixel
``(Y + 0.5) * size_in / size_out - 0.5``; of an input that is the image
flipped, the mirror of that pixel.

Views. The panoptic map is the argmax of upsampled logits. Several views of
one image (test-time augmentation: flips, scales) give one map when each
view's logits are sampled at the output pixels through that view's
coordinates (:class:`PanopticView`) and averaged before the argmax; one view
is the plain prediction.
"""
from typing import NamedTuple, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdet.evaluation.functional import INSTANCE_OFFSET

from .pixel_windows import pixel_windows, sample_windows

# Masks are pasted in groups of windows of about this many pixels: the
# sampling grid, samples and scatter indices of a group (20 bytes a pixel)
# then stay in cache; 2**20 was the fastest of 2**18..2**26 on CPU.
PASTE_CHUNK_PIXELS = 2**20
# Bounds on memory: instance logits upsampled at once over their boxes, and
# boundary pixels whose stuff logits are upsampled at once.
INSTANCE_CHUNK_PIXELS = 2**24
BOUNDARY_CHUNK_PIXELS = 2**16


def paste_masks_in_image(probs: Tensor, bboxes: Tensor,
                         img_shape: Tuple[int, int],
                         mask_thr: float) -> Tensor:
    """Paste (n, S, S) mask probabilities into (n, H, W) bool masks.

    Each mask is resampled only over a window around its box, not over the
    whole image: bilinear sampling of an S x S mask with zero padding is 0
    farther than half a mask pixel outside the box, so the windows give
    exactly the pixels of mmdet's full-image ``_do_paste_mask`` followed by
    ``>= mask_thr``, with one ``grid_sample`` and one scatter per group of
    windows (:func:`~.pixel_windows.pixel_windows`).

    Args:
        probs (Tensor): (n, S, S) probabilities.
        bboxes (Tensor): (n, 4) boxes (x1, y1, x2, y2) in the pixels of the
            output image.
        img_shape (tuple[int, int]): (H, W) of the output image.
        mask_thr (float): a pixel is in the mask where its probability is
            at least this.

    Returns:
        Tensor: (n, H, W) bool.
    """
    img_h, img_w = img_shape
    masks = probs.new_zeros((len(probs), img_h, img_w), dtype=torch.bool)
    if len(probs) == 0:
        return masks
    half_pixel = (bboxes[:, 2:] - bboxes[:, :2]) / (2 * probs.size(-1))
    start = (bboxes[:, :2] - half_pixel).floor().clamp(min=0).long()
    end = torch.minimum((bboxes[:, 2:] + half_pixel).ceil(),
                        bboxes.new_tensor([img_w, img_h])).long()
    for part, xs, ys in pixel_windows(start, end, img_shape,
                                      PASTE_CHUNK_PIXELS):
        windows = _mask_samples(probs[part], bboxes[part], xs, ys)
        pixels = (part[:, None, None] * img_h + ys[:, :, None]) * img_w \
            + xs[:, None, :]
        masks.view(-1).scatter_(0, pixels.flatten(),
                                (windows >= mask_thr).flatten())
    return masks


def _mask_samples(probs: Tensor, bboxes: Tensor, xs: Tensor,
                  ys: Tensor) -> Tensor:
    """Bilinear samples of (n, S, S) masks at the pixel centres of the
    columns ``xs`` (n, w) and rows ``ys`` (n, h), as mmdet's
    ``_do_paste_mask`` computes them: (n, h, w)."""
    x0, y0, x1, y1 = bboxes.split(1, dim=1)
    # A zero-width box samples nothing (grid far outside), where mmdet
    # would zero the infinite grid and smear the mask's centre line.
    grid_x = ((xs.float() + 0.5) - x0) / (x1 - x0).clamp(min=1e-6) * 2 - 1
    grid_y = ((ys.float() + 0.5) - y0) / (y1 - y0).clamp(min=1e-6) * 2 - 1
    return sample_windows(probs.float(), grid_x, grid_y, align_corners=False)


def basis_coordinates(size_out: int, size_in: int, size_basis: int,
                      stride: int, device: torch.device,
                      flip: bool = False) -> Tensor:
    """Where each pixel of an output image lies on the basis, along one axis.

    Output pixel Y is input pixel ``p = (Y + 0.5) * size_in / size_out -
    0.5`` (``size_in - 1 - p`` when the input is the image flipped along
    this axis), which is basis location ``p / stride``; past the last
    location the edge is repeated.

    Returns:
        Tensor: (size_out,) float basis coordinates.
    """
    pixel = (torch.arange(size_out, device=device) + 0.5) * \
        (size_in / size_out) - 0.5
    if flip:
        pixel = size_in - 1 - pixel
    return (pixel / stride).clamp(0, size_basis - 1)


class PanopticView(NamedTuple):
    """The panoptic logits of one view of an image and where the output
    pixels lie on them.

    ``logits`` (C, h, w) at the basis stride over the view's unpadded input;
    ``coords_y`` (H,) and ``coords_x`` (W,) the basis coordinates of the
    output's rows and columns (:func:`basis_coordinates`).
    """
    logits: Tensor
    coords_y: Tensor
    coords_x: Tensor

    def channels(self, index: Union[slice, Tensor]) -> 'PanopticView':
        """The view with only the channels ``logits[index]``."""
        return self._replace(logits=self.logits[index])


def panoptic_view(logits: Tensor, img_shape: Tuple[int, int],
                  out_shape: Tuple[int, int], stride: int,
                  flip: bool = False) -> PanopticView:
    """``logits`` (C, h, w) of an input of ``img_shape`` (H_in, W_in), seen
    from an output of ``out_shape``; ``flip``: the input is the image
    flipped horizontally."""
    coords_y, coords_x = (
        basis_coordinates(n_out, n_in, n_basis, stride, logits.device,
                          flip=axis_flip)
        for n_out, n_in, n_basis, axis_flip in zip(
            out_shape, img_shape, logits.shape[1:], (False, flip)))
    return PanopticView(logits, coords_y, coords_x)


def mask_nms(logits: Tensor, bboxes: Tensor, num_stuff: int, stride: int,
             iou_thr: float) -> Tensor:
    """Duplicates among the instances, at the basis stride.

    An instance's own mask is where its logit beats every stuff logit inside
    its box. An instance whose own mask overlaps that of an earlier (higher
    scored) one with IoU above ``iou_thr`` is a duplicate: one matrix
    product over all pairs.

    Args:
        logits (Tensor): (num_stuff + n, h, w) panoptic logits, instances in
            descending score order.
        bboxes (Tensor): (n, 4) in input pixels.
        num_stuff (int): leading stuff channels of ``logits``.
        stride (int): input pixels per basis location.
        iou_thr (float): IoU above which the later instance is dropped.

    Returns:
        Tensor: (n,) bool, True for the duplicates.
    """
    stuff, things = logits[:num_stuff], logits[num_stuff:]
    ys, xs = (torch.arange(size, device=logits.device)[:, None] * stride
              for size in logits.shape[1:])
    inside_y = (ys >= bboxes[:, 1]) & (ys <= bboxes[:, 3])
    inside_x = (xs >= bboxes[:, 0]) & (xs <= bboxes[:, 2])
    own = (things > stuff.amax(0)) & inside_y.T[:, :, None] \
        & inside_x.T[:, None, :]
    own = own.flatten(1).float()
    intersection = own @ own.T
    area = own.sum(1)
    iou = intersection / (area[:, None] + area[None] - intersection).clamp(
        min=1)
    return (iou.triu(diagonal=1) > iou_thr).any(0)


def unique_instances(logits: Tensor, bboxes: Tensor, num_stuff: int,
                     stride: int, mask_overlap: float) -> Tensor:
    """(n,) bool: the instances that are no duplicate (:func:`mask_nms` at
    IoU ``mask_overlap``; 1 keeps every instance). Arguments as
    :func:`mask_nms`'."""
    if mask_overlap < 1 and len(bboxes) > 1:
        return ~mask_nms(logits, bboxes, num_stuff, stride, mask_overlap)
    return bboxes.new_ones(len(bboxes), dtype=torch.bool)


def panoptic_segmentation(logits: Tensor,
                          labels: Tensor,
                          bboxes: Tensor,
                          img_shape: Tuple[int, int],
                          out_shape: Tuple[int, int],
                          num_things_classes: int,
                          num_stuff_classes: int,
                          stride: int,
                          mask_overlap: float,
                          stuff_area_limit: int,
                          suppress_outside_box: bool = True) -> Tensor:
    """Panoptic ids from the unified panoptic layer's logits.

    The logits of the instance channels are sampled over their own boxes and
    the stuff logits over the image, at ``out_shape``; each pixel takes its
    argmax: a stuff class or one instance. Mask NMS (``mask_overlap``) drops
    duplicates first, and stuff segments smaller than ``stuff_area_limit``
    become void.

    Args:
        logits (Tensor): (num_stuff_classes + n, h, w) ``Y = W^T F`` over the
            unpadded input at the basis stride.
        labels (Tensor): (n,) thing labels of the instance channels, in
            descending score order.
        bboxes (Tensor): (n, 4) their boxes in input pixels.
        img_shape (tuple[int, int]): (H_in, W_in), the unpadded input.
        out_shape (tuple[int, int]): (H, W) of the result: the original image
            size, or ``img_shape`` for the input's.
        num_things_classes (int): thing classes, labels 0..T-1.
        num_stuff_classes (int): stuff classes, labels T..T+S-1.
        stride (int): input pixels per basis location.
        mask_overlap (float): mask NMS IoU threshold (:func:`mask_nms`);
            1 keeps every instance.
        stuff_area_limit (int): stuff segments of fewer pixels (at
            ``out_shape``) become void.
        suppress_outside_box (bool): an instance cannot take pixels outside
            its own box.

    Returns:
        Tensor: (H, W) int64 ids in mmdet's format: stuff ``label``,
        instance ``k`` (1-based channel order) ``label + k *
        INSTANCE_OFFSET``, void ``num_things_classes + num_stuff_classes``.
    """
    (img_h, img_w), (out_h, out_w) = img_shape, out_shape
    # Duplicates are found at the basis stride (16x fewer pixels) and lose
    # their channels before the upsampling.
    keep = unique_instances(logits, bboxes, num_stuff_classes, stride,
                            mask_overlap)
    return merged_panoptic_segmentation(
        [panoptic_view(logits, img_shape, out_shape, stride)],
        labels,
        bboxes * bboxes.new_tensor([out_w / img_w, out_h / img_h] * 2),
        keep,
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        stuff_area_limit=stuff_area_limit,
        suppress_outside_box=suppress_outside_box)


def merged_panoptic_segmentation(views: Sequence[PanopticView],
                                 labels: Tensor,
                                 bboxes: Tensor,
                                 keep: Tensor,
                                 num_things_classes: int,
                                 num_stuff_classes: int,
                                 stuff_area_limit: int,
                                 suppress_outside_box: bool = True
                                 ) -> Tensor:
    """Panoptic ids from the logits of one or several views of an image:
    each output pixel's argmax over the views' mean upsampled logits.

    Args:
        views (Sequence[PanopticView]): the same channels, (num_stuff_classes
            + n, h_v, w_v), in every view, seen from the same output (H, W).
        labels (Tensor): (n,) thing labels of the instance channels, in
            descending score order.
        bboxes (Tensor): (n, 4) their boxes in output pixels.
        keep (Tensor): (n,) bool, the instances that take part (the others
            are duplicates, :func:`unique_instances`).
        num_things_classes, num_stuff_classes, stuff_area_limit,
            suppress_outside_box: as :func:`panoptic_segmentation`'s.

    Returns:
        Tensor: (H, W) int64 ids as :func:`panoptic_segmentation`'s; the
        instance ids count every channel, kept or not.
    """
    out_shape = (len(views[0].coords_y), len(views[0].coords_x))
    void = num_things_classes + num_stuff_classes
    instance_ids = labels + INSTANCE_OFFSET * torch.arange(
        1, len(labels) + 1, device=labels.device)
    channels = torch.cat([
        torch.arange(num_stuff_classes, device=keep.device),
        num_stuff_classes + keep.nonzero()[:, 0]
    ])
    views = [view.channels(channels) for view in views]
    instance_ids, bboxes = instance_ids[keep], bboxes[keep]
    if not suppress_outside_box:
        bboxes = bboxes.new_tensor([[0, 0, out_shape[1], out_shape[0]]
                                    ]).expand_as(bboxes)
    channel = upsampled_argmax(views, bboxes, num_stuff_classes)

    stuff_area = torch.bincount(
        channel.flatten(), minlength=num_stuff_classes)[:num_stuff_classes]
    stuff_ids = torch.arange(num_things_classes, void, device=channel.device)
    stuff_ids[stuff_area < stuff_area_limit] = void
    return torch.cat([stuff_ids, instance_ids])[channel]


def upsampled_argmax(views: Sequence[PanopticView], bboxes: Tensor,
                     num_stuff: int) -> Tensor:
    """Argmax over upsampled channels, each instance only inside its box.

    An instance channel is upsampled only over its box, so the cost grows
    with the boxes' area, not with n x H x W; stuff channels only near
    boundaries (:func:`best_stuff`). With several views, a channel's value
    at a pixel is the mean of the views'. Ties go to the lower channel, as
    in ``argmax``.

    Args:
        views (Sequence[PanopticView]): logits (num_stuff + n, h_v, w_v) and
            the output's basis coordinates, per view.
        bboxes (Tensor): (n, 4) in output pixels.
        num_stuff (int): leading stuff channels of the logits.

    Returns:
        Tensor: (H, W) long, the winning channel of every output pixel.
    """
    stuff_best, channel = best_stuff(
        [view.channels(slice(None, num_stuff)) for view in views])
    if len(bboxes) == 0:
        return channel
    thing_best, instance = best_instance(
        [view.channels(slice(num_stuff, None)) for view in views], bboxes)
    return torch.where(thing_best > stuff_best, num_stuff + instance, channel)


def best_stuff(views: Sequence[PanopticView]) -> Tuple[Tensor, Tensor]:
    """Per output pixel, the highest upsampled stuff logit (mean over the
    views) and its channel.

    An upsampled pixel is a convex combination of its (up to) four source
    locations, so where these share their argmax c in every view, c wins
    the pixel and its value there is the mean of the views' upsampled
    maxima over the channels. Only the other pixels, along the boundaries
    of the low-resolution argmaxes, need every channel upsampled.

    Args:
        views (Sequence[PanopticView]): logits (num_stuff, h_v, w_v) and the
            output's basis coordinates (H,), (W,), per view.

    Returns:
        tuple[Tensor, Tensor]: (H, W) float maxima and (H, W) long channels.
    """
    corners, maxima = [], []
    for logits, coords_y, coords_x in views:
        best, channel = logits.max(0)
        (top, bottom), (left, right) = (
            (coords.long(), (coords.long() + 1).clamp(max=size - 1))
            for coords, size in zip((coords_y, coords_x), logits.shape[1:]))
        upper, lower = channel[top], channel[bottom]
        corners += [upper[:, left], upper[:, right], lower[:, left],
                    lower[:, right]]
        maxima.append(_upsample_at(best[None], coords_x[None],
                                   coords_y[None])[0])
    channel = corners[0]
    boundary = torch.stack([other != channel for other in corners[1:]]).any(0)
    best = _mean(maxima)
    ys, xs = boundary.nonzero(as_tuple=True)
    for y, x in zip(ys.split(BOUNDARY_CHUNK_PIXELS),
                    xs.split(BOUNDARY_CHUNK_PIXELS)):
        best[y, x], channel[y, x] = _mean([
            _upsample_points(logits, coords_x[x], coords_y[y])
            for logits, coords_y, coords_x in views
        ]).max(0)
    return best, channel


def best_instance(views: Sequence[PanopticView],
                  bboxes: Tensor) -> Tuple[Tensor, Tensor]:
    """Per output pixel, the highest upsampled instance logit (mean over the
    views) among the boxes holding the pixel's centre, and its instance
    (the first on ties).

    Args:
        views (Sequence[PanopticView]): logits (n, h_v, w_v), one channel
            per instance, and the output's basis coordinates, per view.
        bboxes (Tensor): (n, 4) in output pixels.

    Returns:
        tuple[Tensor, Tensor]: (H, W) float, -inf where no box is, and
        (H, W) long instance indices (n where no box is).
    """
    size = (len(views[0].coords_y), len(views[0].coords_x))
    img_h, img_w = size
    # Pixel x lies in a box when x + 0.5 is in [x1, x2].
    start = (bboxes[:, :2] - 0.5).ceil().clamp(min=0).long()
    end = torch.minimum((bboxes[:, 2:] - 0.5).floor().long() + 1,
                        start.new_tensor([img_w, img_h]))
    best = views[0].logits.new_full((img_h * img_w, ), float('-inf'))
    windows = []
    for part, xs, ys in pixel_windows(start, end, size,
                                      INSTANCE_CHUNK_PIXELS):
        values = _mean([
            _upsample_at(logits[part], coords_x[xs], coords_y[ys])
            for logits, coords_y, coords_x in views
        ])
        inside = _in_range(ys, start[part, 1:], end[part, 1:])[:, :, None] \
            & _in_range(xs, start[part, :1], end[part, :1])[:, None]
        values.masked_fill_(~inside, float('-inf'))
        pixels = ys[:, :, None] * img_w + xs[:, None]
        best.scatter_reduce_(0, pixels.flatten(), values.flatten(), 'amax')
        windows.append((part, pixels, values))
    # n stands for "no instance" and loses every 'amin'.
    none = len(views[0].logits)
    instance = torch.full_like(best, none, dtype=torch.long)
    for part, pixels, values in windows:
        wins = (values == best.take(pixels)) & (values > float('-inf'))
        instance.scatter_reduce_(
            0, pixels.flatten(),
            torch.where(wins, part[:, None, None], none).flatten(), 'amin')
    return best.view(size), instance.view(size)


def _mean(tensors: Sequence[Tensor]) -> Tensor:
    """The element-wise mean of same-shaped ``tensors`` (one view, the plain
    prediction, is its own mean, without a copy)."""
    return tensors[0] if len(tensors) == 1 else torch.stack(tensors).mean(0)


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
