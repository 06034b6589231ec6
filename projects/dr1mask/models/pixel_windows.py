"""Batched per-box work on the pixels around each box.

The instance module pastes each mask and the panoptic layer scores each
instance only near its box. Both process many boxes at once as windows:
rectangles of image pixels, one per box, that share one size within a
group, so each group is one batched tensor operation (``grid_sample``, a
scatter) rather than a Python loop over boxes or a pass over the whole
image per box.
"""
from typing import Iterator, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


class PixelWindows(NamedTuple):
    """m windows of h x w pixels.

    ``boxes`` (m,) indexes the boxes they belong to, ``xs`` (m, w) and
    ``ys`` (m, h) hold their pixel columns and rows: window i covers
    ``ys[i] x xs[i]``.
    """
    boxes: Tensor
    xs: Tensor
    ys: Tensor


def pixel_windows(start: Tensor, end: Tensor, img_shape: Tuple[int, int],
                  max_pixels: int) -> Iterator[PixelWindows]:
    """Windows covering the pixel ranges ``[start, end)`` of n boxes.

    Boxes are grouped by size class (the power of 2 of their longer side),
    and a group's windows take its largest extent, so one large box does not
    inflate the windows of the small ones. Windows that would cross the
    image's far edge are moved inside it; they still cover their ranges,
    and may cover pixels beyond them, which the caller masks or ignores.

    Args:
        start (Tensor): (n, 2) first column and row of each range, >= 0.
        end (Tensor): (n, 2) column and row past the end, <= the image size.
        img_shape (tuple[int, int]): (H, W).
        max_pixels (int): at most this many pixels per yielded group (but at
            least one window), to bound the memory.

    Yields:
        PixelWindows: each box once, in no particular order.
    """
    size = start.new_tensor(img_shape[::-1])
    extent = (end - start).clamp(min=1)
    size_class = extent.amax(1).float().log2().ceil()
    for same_size in size_class.unique():
        boxes = (size_class == same_size).nonzero()[:, 0]
        window = extent[boxes].amax(0)
        window_start = torch.minimum(start[boxes], size - window)
        window_w, window_h = window.tolist()
        offsets_x = torch.arange(window_w, device=start.device)
        offsets_y = torch.arange(window_h, device=start.device)
        chunk = max(1, max_pixels // (window_h * window_w))
        for part, part_start in zip(boxes.split(chunk),
                                    window_start.split(chunk)):
            yield PixelWindows(part, part_start[:, :1] + offsets_x,
                               part_start[:, 1:] + offsets_y)


def separable_grid(grid_x: Tensor, grid_y: Tensor) -> Tensor:
    """(m, h, w, 2) ``grid_sample`` grids of m separable grids: ``grid_x``
    (m, w) the coordinates of each grid's columns, ``grid_y`` (m, h) of its
    rows; ``[i, row, column]`` is ``(grid_x[i, column], grid_y[i, row])``."""
    return torch.stack(
        torch.broadcast_tensors(grid_x[:, None, :], grid_y[:, :, None]), 3)


def sample_windows(images: Tensor, grid_x: Tensor, grid_y: Tensor,
                   **grid_sample_args) -> Tensor:
    """Bilinear samples (m, h, w) of m single-channel ``images`` (m, H', W'),
    each on its own separable grid: ``grid_sample`` coordinates ``grid_x``
    (m, w) of its window's columns and ``grid_y`` (m, h) of its rows."""
    grid = separable_grid(grid_x, grid_y)
    return F.grid_sample(images[:, None], grid.to(images.dtype),
                         **grid_sample_args)[:, 0]
