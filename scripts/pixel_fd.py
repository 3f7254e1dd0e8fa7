"""Fréchet distance between generated samples and real images on 7×7
average-pooled pixels (49-d): a crude, quick metric for comparing samplers on
the same model before Inception FID exists. Not comparable with FID.

Usage: python3 scripts/pixel_fd.py GRID.png N NROW [REAL_IDX_GZ]
GRID.png is a `fine sample` grid (28×28 tiles, 2-pixel padding, NROW per row).
Real images: the first 1000 of the bundled Fashion-MNIST test split by default.
"""
import gzip
import sys

import numpy as np
from PIL import Image
from scipy import linalg


def tiles(path, n, nrow, size=28, pad=2):
    g = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
    out = []
    for i in range(n):
        r, c = divmod(i, nrow)
        y, x = pad + r * (size + pad), pad + c * (size + pad)
        out.append(g[y : y + size, x : x + size])
    return np.stack(out)


def real(path, n=1000):
    with gzip.open(path) as f:
        b = f.read()
    return np.frombuffer(b, dtype=np.uint8, offset=16)[: n * 784].reshape(n, 28, 28) / 255.0


def feats(x):
    return x.reshape(len(x), 7, 4, 7, 4).mean(axis=(2, 4)).reshape(len(x), 49)


def fd(a, b):
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean.real))


if __name__ == "__main__":
    grid, n, nrow = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ref = sys.argv[4] if len(sys.argv) > 4 else "data/fashion-mnist-test/t10k-images-idx3-ubyte.gz"
    print(f"{fd(feats(tiles(grid, n, nrow)), feats(real(ref))):.4f}")
