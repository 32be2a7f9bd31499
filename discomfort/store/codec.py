"""How a value becomes bytes in the store, and back.

Layout of a blob: ``MAGIC | u32 header length | header JSON | zero padding to 64 | payload``.
Tensors and numpy arrays travel as their raw bytes (one copy in, one copy out, no pickle);
pass-by-reference values (recipes, workflows) as JSON; anything else through cloudpickle.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from dataclasses import dataclass
from typing import Any

import cloudpickle
import numpy as np

from ..errors import CorruptValueError, UnstorableValueError

MAGIC = b"DSCB\x01"
ALIGN = 64
_LEN = struct.Struct("<I")
_PREAMBLE = len(MAGIC) + _LEN.size


@dataclass
class Encoded:
    """A value ready to be written: a small header and a payload kept as a view, not a copy."""

    header: bytes
    payload: memoryview
    kind: str
    _keepalive: Any = None  # the array the payload views
    shape: list | None = None  # tensors and arrays: what a type check needs, without a load
    dtype: str | None = None

    @property
    def size(self) -> int:
        return len(self.header) + self.payload.nbytes

    def write_into(self, buf) -> None:
        n = len(self.header)
        buf[:n] = self.header
        buf[n:n + self.payload.nbytes] = self.payload

    def to_bytes(self) -> bytes:
        return self.header + self.payload.tobytes()

    def hash_into(self, hasher) -> None:
        """Feed the blob's bytes to ``hasher`` without joining them into a copy."""
        hasher.update(self.header)
        hasher.update(self.payload)


def _header(meta: dict, payload_len: int) -> bytes:
    meta = dict(meta, n=payload_len)
    return _frame(json.dumps(meta, separators=(",", ":")).encode())


def _frame(body: bytes) -> bytes:
    raw = MAGIC + _LEN.pack(len(body)) + body
    return raw + b"\0" * (-len(raw) % ALIGN)


_SIMPLE = re.compile(rb'\{"kind":"(pickle|json)","n":([0-9]+)\}')


def _simple_header(kind: str, payload_len: int) -> bytes:
    """The header of a pickle or JSON value, without json.dumps (a small save is ~20 us in
    all, and this is on its path). Same bytes as ``_header({"kind": kind}, payload_len)``."""
    return _frame(b'{"kind":"%s","n":%d}' % (kind.encode(), payload_len))


def _is_torch_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and type(value) is torch.Tensor


def encode(value: Any, as_json: bool = False) -> Encoded:
    if as_json:
        body = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        return Encoded(_simple_header("json", len(body)), memoryview(body), "json")
    if _is_torch_tensor(value):
        tensor = _strided_copy(value)
        raw = tensor.reshape(-1).view(_torch().uint8).numpy() if tensor.numel() else np.empty(0, np.uint8)
        meta: dict[str, Any] = {"kind": "torch", "dtype": str(tensor.dtype).removeprefix("torch."),
                                "shape": list(tensor.shape)}
        if value.requires_grad:
            meta["grad"] = True  # the flag comes back; the graph that made the value does not
        return Encoded(_header(meta, raw.nbytes), raw.data, "torch", tensor,
                       meta["shape"], meta["dtype"])
    if type(value) is np.ndarray and not value.dtype.hasobject and value.dtype.fields is None:
        # (np.ascontiguousarray would make a 0-d array 1-d)
        array = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        raw = array.reshape(-1).view(np.uint8)
        shape = list(array.shape)
        return Encoded(_header({"kind": "numpy", "dtype": array.dtype.str, "shape": shape}, raw.nbytes),
                       raw.data, "numpy", array, shape, str(array.dtype))
    body = cloudpickle.dumps(value, protocol=5)
    return Encoded(_simple_header("pickle", len(body)), memoryview(body), "pickle")


def _strided_copy(value):
    """A plain dense CPU tensor with the same values: sparse layouts become dense (lossless),
    lazy conjugate and negative views are resolved. A quantized or data-less (meta) tensor is
    refused before anything is stored."""
    torch = _torch()
    if value.is_quantized:
        raise UnstorableValueError("a quantized tensor cannot be stored as it is: save tensor.dequantize() "
                        "(floats), or tensor.int_repr() with its q_scale() and q_zero_point()")
    if value.is_meta:
        raise UnstorableValueError("a tensor on the 'meta' device has no data to store")
    tensor = value.detach()
    if tensor.layout != torch.strided:  # COO, CSR, CSC, BSR...: loads back dense
        tensor = tensor.to_dense()
    tensor = tensor.resolve_conj().resolve_neg()
    return tensor.cpu().contiguous()


_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def is_plain_data(value: Any, _depth: int = 0) -> bool:
    """Known to be data: tensors, arrays, scalars, text and containers of those. Anything
    else (a model, a sampler...) must go by reference, never through a pickle."""
    if _depth > 64:
        return False
    if isinstance(value, _SCALARS) or isinstance(value, np.generic) or _is_torch_tensor(value):
        return True
    if type(value) is np.ndarray:
        return not value.dtype.hasobject
    if isinstance(value, (list, tuple)):
        return all(is_plain_data(v, _depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and is_plain_data(v, _depth + 1) for k, v in value.items())
    return False


def read_header(buf) -> tuple[dict, int]:
    """The header dict and the payload's offset in ``buf``."""
    if bytes(buf[:len(MAGIC)]) != MAGIC:
        raise CorruptValueError("not a Discomfort value (bad magic)")
    (length,) = _LEN.unpack_from(buf, len(MAGIC))
    body = bytes(buf[_PREAMBLE:_PREAMBLE + length])
    simple = _SIMPLE.fullmatch(body)  # what _simple_header writes: no json.loads on a small load
    meta = {"kind": simple[1].decode(), "n": int(simple[2])} if simple else json.loads(body)
    offset = _PREAMBLE + length
    return meta, offset + (-offset % ALIGN)


def decode(buf) -> Any:
    """Rebuild a value from a blob; the result never shares memory with ``buf``."""
    meta, offset = read_header(buf)
    n = meta["n"]
    src = np.frombuffer(buf, np.uint8, count=n, offset=offset)
    kind = meta["kind"]
    if kind == "torch":
        torch = _torch()
        out = torch.empty(meta["shape"], dtype=getattr(torch, meta["dtype"]))
        if n and not memoryview(buf).readonly:
            # torch's copy is ~3x numpy's into fresh memory (parallel, and it faults pages in
            # faster): the loop case's load is most of its time
            out.reshape(-1).view(torch.uint8).copy_(
                torch.frombuffer(buf, dtype=torch.uint8, count=n, offset=offset))
        elif n:
            np.copyto(out.reshape(-1).view(torch.uint8).numpy(), src)
        return out.requires_grad_() if meta.get("grad") else out
    if kind == "numpy":
        out = np.empty(meta["shape"], dtype=np.dtype(meta["dtype"]))
        np.copyto(out.reshape(-1).view(np.uint8), src)
        return out
    if kind == "json":
        return json.loads(src.tobytes())
    if kind == "pickle":
        return cloudpickle.loads(src)
    raise CorruptValueError(f"unknown value kind {kind!r}")


def _torch():
    import torch

    return torch
