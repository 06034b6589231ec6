"""Time DR1Conv against the plain convolution of the same shape.

DR1Conv (Eq. 4, ``Conv(X * A) * B``) should cost one convolution plus two
elementwise products; the target is within 1.15x of ``nn.Conv2d``'s time at
the DR1Basis P3-level shape (64 channels, 3x3, 200 x 336, batch 1). The two
modules share the same weights and are timed alternately, their order
swapped every round, and the medians are reported.

Steady state on CPU: glibc returns large blocks (a 64 x 200 x 336 float32
map is 17 MB) to the kernel on free, so every fresh tensor of that size pays
page faults that cost more than the product written into it, which would
show up as a +30 % "DR1Conv overhead" that a long-running model does not pay.
The script therefore re-executes itself with ``MALLOC_MMAP_THRESHOLD_`` (32
MiB, glibc's maximum, so such blocks come from the heap) and
``MALLOC_TRIM_THRESHOLD_`` (1 GiB, so the heap is not trimmed) set, unless
``--no-malloc-tuning`` is given or they are already set. DR1Conv itself
reuses the convolution's output buffer for ``* B`` when no graph is built.

On a shared machine, ``--clock cpu`` times with the CPU time of the process
(``time.process_time``) instead of the wall time: with ``--threads 1`` it
leaves out the time the scheduler gives other processes, which otherwise
lands on whichever module is running (memory bandwidth and caches stay
shared). With more threads it sums their CPU time, OpenMP's spin-waiting
included, so there the wall time is the figure that counts.

Example::

    .venv/bin/python tools/analysis_tools/benchmark_dr1conv.py --train
"""
import argparse
import os
import statistics
import sys
import time
from typing import Callable, List, Tuple

import torch
import torch.nn as nn

from projects.dr1mask.models.layers.dr1_conv import CONTEXT_ACTS, DR1Conv

CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}
MALLOC_ENV = {
    'MALLOC_MMAP_THRESHOLD_': str(32 << 20),
    'MALLOC_TRIM_THRESHOLD_': str(1 << 30),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Time DR1Conv against nn.Conv2d of the same shape')
    parser.add_argument('--channels', type=int, default=64)
    parser.add_argument('--kernel-size', type=int, default=3)
    parser.add_argument('--size', type=int, nargs=2, default=[200, 336],
                        metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=50,
                        help='timed rounds per module and row')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--context-acts', nargs='+', default=['identity',
                        'one_plus_tanh'], choices=CONTEXT_ACTS)
    parser.add_argument('--train', action='store_true',
                        help='also time forward + backward')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--no-malloc-tuning', action='store_true',
                        help='measure with glibc\'s default malloc settings')
    parser.add_argument('--clock', choices=CLOCKS, default='wall',
                        help='wall time, or the CPU time of this process '
                        '(see the module docstring)')
    return parser.parse_args()


def reexec_with_malloc_tuning() -> None:
    """Restart the process with the malloc settings (they are read once)."""
    if all(key in os.environ for key in MALLOC_ENV):
        return
    env = dict(os.environ, **MALLOC_ENV)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def timed(fn: Callable[[], None], device: torch.device,
          clock: Callable[[], float]) -> float:
    """``clock`` time of one call in ms, the device's queue drained."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = clock()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return (clock() - start) * 1e3


def alternate(conv_fn: Callable[[], None], dr1_fn: Callable[[], None],
              repeats: int, warmup: int, device: torch.device,
              clock: Callable[[], float]) -> Tuple[List[float], List[float]]:
    """Time both functions alternately, swapping their order each round."""
    for _ in range(warmup):
        conv_fn()
        dr1_fn()
    conv_ms, dr1_ms = [], []
    for r in range(repeats):
        if r % 2:
            dr1_ms.append(timed(dr1_fn, device, clock))
            conv_ms.append(timed(conv_fn, device, clock))
        else:
            conv_ms.append(timed(conv_fn, device, clock))
            dr1_ms.append(timed(dr1_fn, device, clock))
    return conv_ms, dr1_ms


def main() -> None:
    args = parse_args()
    if not args.no_malloc_tuning:
        reexec_with_malloc_tuning()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    c, k, (h, w), n = args.channels, args.kernel_size, args.size, args.batch
    x = torch.randn(n, c, h, w, device=device)
    a = torch.randn(n, c, h, w, device=device)
    b = torch.randn(n, c, h, w, device=device)
    grad_out = torch.randn(n, c, h, w, device=device)
    conv = nn.Conv2d(c, c, k, padding=k // 2, bias=False).to(device)

    malloc = ', '.join(f'{key}={os.environ[key]}' for key in MALLOC_ENV
                       if key in os.environ) or 'glibc defaults'
    print(f'DR1Conv vs nn.Conv2d: input ({n}, {c}, {h}, {w}) float32, '
          f'{k}x{k} conv, {c} -> {c} channels, no bias, no norm / act')
    print(f'device {device}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, malloc: {malloc}')
    print(f'{args.repeats} alternating rounds after {args.warmup} warm-up '
          f'rounds; times are medians of {args.clock} time')
    # Other processes on the cores distort the medians: say what ran beside.
    print('load average at start: {:.2f} {:.2f} {:.2f}'.format(
        *os.getloadavg()))
    print()
    header = (f'{"mode":<16}{"context_act":<15}{"conv ms":>9}'
              f'{"DR1Conv ms":>12}{"ratio":>8}{"+ms":>8}')
    print(header)
    print('-' * len(header))

    modes = ['no_grad fwd'] + (['train fwd+bwd'] if args.train else [])
    for mode in modes:
        for act in args.context_acts:
            dr1 = DR1Conv(c, c, k, context_act=act).to(device)
            dr1.conv.weight.data.copy_(conv.weight.data)
            if mode == 'no_grad fwd':

                @torch.no_grad()
                def conv_fn():
                    conv(x)

                @torch.no_grad()
                def dr1_fn():
                    dr1(x, a, b)
            else:
                xg, ag, bg = (t.clone().requires_grad_() for t in (x, a, b))

                def conv_fn():
                    conv(xg).backward(grad_out)
                    conv.zero_grad(set_to_none=True)
                    xg.grad = None

                def dr1_fn():
                    dr1(xg, ag, bg).backward(grad_out)
                    dr1.zero_grad(set_to_none=True)
                    xg.grad = ag.grad = bg.grad = None

            conv_ms, dr1_ms = alternate(conv_fn, dr1_fn, args.repeats,
                                        args.warmup, device,
                                        CLOCKS[args.clock])
            conv_med = statistics.median(conv_ms)
            dr1_med = statistics.median(dr1_ms)
            print(f'{mode:<16}{act:<15}{conv_med:>9.2f}{dr1_med:>12.2f}'
                  f'{dr1_med / conv_med:>7.3f}x{dr1_med - conv_med:>8.2f}')
    print('load average at end: {:.2f} {:.2f} {:.2f}'.format(
        *os.getloadavg()))


if __name__ == '__main__':
    main()
