"""Fashion-MNIST as RGB at 96 x 96 in [-1, 1] (EfficientNet-Lite's input scaling): the first N real labelled training
images as an .npz with x, y and labels. Usage: python make_data.py 16000 fmnist96_16k.npz"""
import sys

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from bench.data.idx import load_fashion_mnist_raw  # noqa: E402

count, out = int(sys.argv[1]), sys.argv[2]
raw = load_fashion_mnist_raw()
x, y = raw["train_images"][:count], raw["train_labels"][:count]
t = torch.from_numpy(x[:, None].astype(np.float32) / 255.0)
t = torch.nn.functional.interpolate(t, size=(96, 96), mode="bilinear", align_corners=False)
t = (t * 2 - 1).repeat(1, 3, 1, 1)
labels = np.array(["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"])
np.savez(out, x=t.numpy().astype(np.float32), y=y.astype(np.int64), labels=labels)
print(out, tuple(t.shape), np.bincount(y))
