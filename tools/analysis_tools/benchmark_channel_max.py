"""Time the panoptic layer's argmax over channels against replacements.

``post_processing.best_stuff`` takes, at every basis location, the best stuff
logit and its channel: ``logits.max(0)`` on the (S, h, w) stuff logits,
reduced over the outer dimension. On this CPU ATen's ``max`` with indices
is an order of magnitude slower there than ``amax`` (the values alone,
vectorised over the locations), so this script times, in that layout:

- ``max``: ``logits.max(0)``, what the layer does;
- ``amax``: ``logits.amax(0)``, the values without the indices (a bound,
  not a replacement);
- ``amax+amin``: the values by ``amax``, then the first channel reaching
  them, ``where(logits == best, channel, S).amin(0)`` in the logits' float
  dtype (both reductions vectorised; three passes over the logits);
- ``argmax``: ``logits.argmax(0)``, the indices alone.

Every replacement is checked to give ``max``'s values and indices, ties
included (the logits are rounded to a coarse grid so that many locations
have two equal best channels; ``max`` returns the first), before it is
timed. The shapes are the stuff logits of COCO (53 classes) at the basis
stride 4 of an 800 x 1216 and a 512 x 512 input, and the toy set's (3
classes, 256 x 256). Calls alternate, their order rotated every round; the
medians are printed as a table.

Example::

    .venv/bin/python tools/analysis_tools/benchmark_channel_max.py \\
        --threads 1 --rounds 50
"""
import argparse
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

# (channels, h, w): stuff logits at stride 4 (see the module docstring).
SHAPES = ((53, 200, 304), (53, 128, 128), (3, 64, 64))


def max_with_indices(logits: Tensor) -> Tuple[Tensor, Tensor]:
    return logits.max(0)


def amax_only(logits: Tensor) -> Tuple[Tensor, None]:
    return logits.amax(0), None


def amax_then_amin(logits: Tensor) -> Tuple[Tensor, Tensor]:
    best = logits.amax(0)
    channels = torch.arange(len(logits), dtype=logits.dtype,
                            device=logits.device)[:, None, None]
    first = torch.where(logits == best, channels, float(len(logits)))
    return best, first.amin(0).long()


def argmax_only(logits: Tensor) -> Tuple[None, Tensor]:
    return None, logits.argmax(0)


METHODS: Dict[str, Callable[[Tensor], tuple]] = {
    'max': max_with_indices,
    'amax': amax_only,
    'amax+amin': amax_then_amin,
    'argmax': argmax_only,
}


def check(logits: Tensor) -> None:
    """Every method's values and indices are ``max``'s."""
    values, indices = max_with_indices(logits)
    for name, method in METHODS.items():
        best, channel = method(logits)
        if best is not None and not torch.equal(best, values):
            raise AssertionError(f'{name}: values differ from max(0)')
        if channel is not None and not torch.equal(channel, indices):
            raise AssertionError(f'{name}: indices differ from max(0)')


def tied_logits(shape: Tuple[int, int, int], seed: int = 0) -> Tensor:
    """Random logits on a grid of 0.25, so that equal maxima are common."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * 4).round() / 4


def time_methods(logits: Tensor, rounds: int) -> Dict[str, float]:
    """Median ms of every method, calls alternating, order rotated."""
    names = list(METHODS)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for name in names:  # warm-up
        METHODS[name](logits)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            METHODS[name](logits)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument('--rounds', type=int, default=50)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f'Argmax over channels, {torch.get_num_threads()} threads, median '
          f'of {args.rounds} rounds, ms:\n')
    print('| logits (S, h, w) | ' + ' | '.join(METHODS) +
          ' | max / (amax+amin) |')
    print('|---|' + '---|' * (len(METHODS) + 1))
    for shape in SHAPES:
        check(tied_logits(shape))
        ms = time_methods(torch.randn(shape), args.rounds)
        rows.append(dict(shape=list(shape), ms=ms))
        print(f'| {shape} | ' + ' | '.join(f'{v:.3f}' for v in ms.values()) +
              f" | {ms['max'] / ms['amax+amin']:.2f} |")
    return rows


if __name__ == '__main__':
    main()
