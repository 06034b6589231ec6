"""Safe loading of the checkpoints mmengine's runner writes.

torch >= 2.6 loads checkpoints with ``weights_only=True``: its unpickler
builds tensors, containers and primitive types, and refuses any other global
a pickle names, so a crafted file cannot run code. mmengine 0.10.7 calls
``torch.load`` without the argument, and its runner's checkpoints name a few
more globals: numpy scalars and arrays (the seed, the iteration counters of
the message hub; an empty array pickles its data as ``bytes()``) and
mmengine's ``HistoryBuffer`` (the logged scalars).

Importing this module adds exactly those globals, by name, to torch's
allowlist (``torch.serialization.add_safe_globals``); ``weights_only`` stays
on and every other global is still refused, with an error naming it. The
configs list this module in ``custom_imports``, so mmdet's own tools and
``DetInferencer`` load the project's checkpoints too; ``tools/train.py`` and
``tools/test.py`` import it for any config.

A checkpoint from elsewhere that names other globals is refused. If you
trust it, either allow its globals yourself
(``torch.serialization.add_safe_globals([...])``, the error names them), or
load it once with ``torch.load(path, weights_only=False)`` and save its
``state_dict`` alone.
"""
import pickle
from typing import Any, List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

# The statistics HistoryBuffer pickles with its state (its __getstate__).
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_statistic(owner: Any, name: str) -> Any:
    """``getattr`` for exactly what a pickled ``HistoryBuffer`` asks of it.

    Pickle protocol 2 (``torch.save``'s) writes the function
    ``HistoryBuffer.min`` as ``getattr(HistoryBuffer, 'min')``; allowing the
    builtin ``getattr`` would hand a crafted pickle every attribute of every
    allowed object, so this stands in for it and answers only those four.
    """
    if owner is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'refused getattr({owner!r}, {name!r}): this checkpoint loader only '
        f'looks up HistoryBuffer.{{{", ".join(HISTORY_BUFFER_STATISTICS)}}}')


def empty_bytes(*args: Any) -> bytes:
    """``bytes()`` for exactly what a pickled empty ``bytes`` asks of it.

    Pickle protocol 2 writes ``b''`` as the call ``bytes()`` (longer bytes go
    through ``_codecs.encode``, which torch allows): an empty numpy array's
    data, e.g. in an empty ``HistoryBuffer``. Allowing the builtin ``bytes``
    would let a crafted pickle allocate ``bytes(n)`` of any size, so this
    stands in for it and answers only the call without arguments.
    """
    if args:
        raise pickle.UnpicklingError(
            f'refused bytes(*{args!r}): this checkpoint loader only builds '
            "the empty bytes b''")
    return b''


def mmengine_checkpoint_globals() -> List[Any]:
    """The globals, beyond torch's defaults, that mmengine's runner pickles
    into a checkpoint (``tests/test_tools.py`` checks the list against a
    checkpoint ``tools/train.py`` wrote); ``getattr`` is
    :func:`history_buffer_statistic` and ``bytes`` :func:`empty_bytes`."""
    return [
        HistoryBuffer,
        (history_buffer_statistic, 'builtins.getattr'),
        (empty_bytes, 'builtins.bytes'),
        # numpy arrays and scalars: how numpy pickles them
        np.ndarray,
        np.dtype,
        np._core.multiarray._reconstruct,
        np._core.multiarray.scalar,
        # the dtypes of the arrays and scalars the runner stores
        type(np.dtype(np.float64)),
        type(np.dtype(np.float32)),
        type(np.dtype(np.int64)),
    ]


torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
