"""Tensors for the store tests, with or without torch.

`make test` also runs the store tests on Python 3.12 and 3.13, in venvs with numpy but no
torch (a multi-GB download for each Python). Where torch is installed, these helpers make the
torch tensors the tests always used; elsewhere, numpy arrays of the same shape and dtype
(float32), which the store moves the same way: as raw bytes. A test of torch tensors
themselves is marked ``needs_torch`` and skips without torch. (Import-safe, like
refs_support.py: the test modules import it by name.)
"""

from __future__ import annotations

import numpy as np
import pytest

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch (not installed for this Python)")


def ones(*shape):
    return torch.ones(*shape) if torch is not None else np.ones(shape, np.float32)


def zeros(*shape):
    return torch.zeros(*shape) if torch is not None else np.zeros(shape, np.float32)


def full(shape: tuple, value: float):
    return torch.full(shape, value) if torch is not None else np.full(shape, value, np.float32)


def rand(*shape):
    return torch.rand(*shape) if torch is not None else np.random.rand(*shape).astype(np.float32)


def randn(*shape):
    return torch.randn(*shape) if torch is not None else np.random.randn(*shape).astype(np.float32)


def is_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) if torch is not None else isinstance(value, np.ndarray)


def equal(a, b) -> bool:
    """``torch.equal`` where torch is installed; else same dtype, shape and values."""
    if torch is not None:
        return torch.equal(a, b)
    return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)


# The head of the scripts the process tests run in fresh interpreters (the same Python, so the
# same packages): `full` as above.
FULL_SOURCE = """\
try:
    from torch import full
except ImportError:
    import numpy
    def full(shape, value):
        return numpy.full(shape, value, numpy.float32)
"""
