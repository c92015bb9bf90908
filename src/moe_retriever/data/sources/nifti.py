"""A minimal NIfTI-1 reader for label masks (``.nii`` / ``.nii.gz``), so that reading the ADNI
grey-matter mask does not need nibabel.

Only single-file NIfTI-1 (magic ``n+1``) is read. The array is returned indexed ``[x, y, z]``,
as ``nibabel.load(path).get_fdata()`` returns it (the file stores x fastest).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ..dataset import DataValidationError

# NIfTI-1 datatype codes
_DTYPES = {
    2: np.uint8,
    4: np.int16,
    8: np.int32,
    16: np.float32,
    64: np.float64,
    256: np.int8,
    512: np.uint16,
    768: np.uint32,
    1024: np.int64,
    1280: np.uint64,
}
HEADER_SIZE = 348


def read_nifti(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataValidationError(f"{path}: cannot be read: {exc}") from exc
    if len(raw) < HEADER_SIZE:
        raise DataValidationError(f"{path}: too short for a NIfTI-1 header ({len(raw)} bytes)")
    for endian in ("<", ">"):
        if struct.unpack(endian + "i", raw[:4])[0] == HEADER_SIZE:
            break
    else:
        raise DataValidationError(
            f"{path}: not a NIfTI-1 file (header size field is not 348; NIfTI-2 is not supported)"
        )
    if raw[344:347] != b"n+1":
        raise DataValidationError(
            f"{path}: only single-file NIfTI-1 (magic 'n+1') is supported, got magic {raw[344:348]!r}"
        )
    dim = struct.unpack(endian + "8h", raw[40:56])
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise DataValidationError(f"{path}: invalid number of dimensions {ndim}")
    shape = tuple(int(d) for d in dim[1 : 1 + ndim])
    datatype = struct.unpack(endian + "h", raw[70:72])[0]
    if datatype not in _DTYPES:
        raise DataValidationError(f"{path}: unsupported NIfTI datatype code {datatype}")
    vox_offset = int(struct.unpack(endian + "f", raw[108:112])[0])
    slope, inter = struct.unpack(endian + "2f", raw[112:120])
    dtype = np.dtype(_DTYPES[datatype]).newbyteorder(endian)
    count = int(np.prod(shape))
    if vox_offset + count * dtype.itemsize > len(raw):
        raise DataValidationError(f"{path}: the file is shorter than its header says")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=vox_offset).reshape(shape, order="F")
    data = data.astype(dtype.newbyteorder("="))
    if slope not in (0.0, 1.0) or inter != 0.0:
        data = data * slope + inter
    # trailing singleton dimensions (a 3-D mask stored as x, y, z, 1) carry nothing
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data
