#!/usr/bin/env python3
"""Seeds the fuzz corpora (fuzz/corpus/<target>/, not committed) from the repository's fixtures:
the ONNX models, the first images of the shipped MNIST subset (raw and gzip, IDX and .npy), and
data-directory layouts. Run from anywhere: python3 fuzz/seed.py"""
import gzip
import os
import shutil
import struct

fuzz = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(fuzz)


def corpus(target):
    d = os.path.join(fuzz, "corpus", target)
    os.makedirs(d, exist_ok=True)
    return d


def put(target, name, data):
    with open(os.path.join(corpus(target), name), "wb") as f:
        f.write(data)


def npy(descr, shape, payload, major=1, fortran=False):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (descr, "True" if fortran else "False", dims)
    prefix = 10 if major == 1 else 12
    header += " " * ((-(prefix + len(header) + 1)) % 64) + "\n"
    size = struct.pack("<H", len(header)) if major == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([major, 0]) + size + header.encode() + payload


# ONNX: every model fixture of the repository.
for src in ["examples/models/mnist-convnet-maxpool.onnx"] + [
    os.path.join("onnx/testdata", f) for f in sorted(os.listdir(os.path.join(root, "onnx/testdata"))) if f.endswith(".onnx")
]:
    shutil.copy(os.path.join(root, src), os.path.join(corpus("onnx_import"), os.path.basename(src)))

# IDX: the first 4 images and labels of the shipped subset, raw and gzip; a float and an i16 array.
mnist = os.path.join(root, "examples/data/mnist-1k")
images = gzip.open(os.path.join(mnist, "t10k-images-idx3-ubyte.gz")).read()
labels = gzip.open(os.path.join(mnist, "t10k-labels-idx1-ubyte.gz")).read()
n = 4
img = images[:4] + struct.pack(">I", n) + images[8:16] + images[16 : 16 + n * 784]
lab = labels[:4] + struct.pack(">I", n) + labels[8 : 8 + n]
put("idx", "images4", img)
put("idx", "images4.gz", gzip.compress(img))
put("idx", "labels4", lab)
put("idx", "labels4.gz", gzip.compress(lab))
put("idx", "f32-2x3", bytes([0, 0, 0x0D, 2]) + struct.pack(">II", 2, 3) + struct.pack(">6f", 0, 0.5, 1, -1, 2, 3))
put("idx", "i16-3x1x2", bytes([0, 0, 0x0B, 3]) + struct.pack(">III", 3, 1, 2) + struct.pack(">6h", 1, -2, 3, 4, 5, 6))

# NPY: the same images and labels as .npy (versions 1 and 2), a float array, a Fortran-order one.
put("npy", "images4.npy", npy("|u1", [n, 28, 28], img[16:]))
put("npy", "images4.npy.gz", gzip.compress(npy("|u1", [n, 28, 28], img[16:])))
put("npy", "labels4-i8.npy", npy("<i8", [n], b"".join(struct.pack("<q", b) for b in lab[8:])))
put("npy", "f4-v2.npy", npy("<f4", [2, 3], struct.pack("<6f", 0, 0.5, 1, -1, 2, 3), major=2))
put("npy", "f8-be.npy", npy(">f8", [2, 1, 2], struct.pack(">4d", 0, 0.25, 1, 2)))
put("npy", "fortran.npy", npy("<u2", [2, 2], struct.pack("<4H", 1, 2, 3, 4), fortran=True))

# Data paths: a flags byte (which path to pass, whether --labels is given) and newline-separated
# file names (a name ending in `.d` is a directory).
layouts = [
    b"t10k-images-idx3-ubyte.gz\nt10k-labels-idx1-ubyte.gz\ntrain-images-idx3-ubyte\ntrain-labels-idx1-ubyte",
    b"x_test.npy\ny_test.npy\nx.npy\ny.npy",
    b"images.npy\nlabels.npy\nmnist_images.npy.gz\nmnist_labels.npy",
    b"t10k-images.idx3-ubyte\nt10k-labels.idx1-ubyte\nsub.d",
    b"X.npy\nY.npy\ntest_images.npy\ntest_labels.npy.d",
]
for i, names in enumerate(layouts):
    for flags in [0, 1, 2, 3, 5, 0x16]:
        put("data_path", "layout%d-flags%02x" % (i, flags), bytes([flags]) + names)
print("seeded", os.path.join(fuzz, "corpus"))
