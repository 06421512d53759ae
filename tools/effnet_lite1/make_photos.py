"""A flat folder of real photos (no labels): skimage's and scikit-learn's bundled photos and MATE's nature
wallpapers, each saved whole and as 5 random crops (30-100 % of the area), as JPEG."""
import glob
import sys
import numpy as np
from pathlib import Path
from PIL import Image
import skimage.data as d
from sklearn.datasets import load_sample_images

out = Path(sys.argv[1] if len(sys.argv) > 1 else "photos"); out.mkdir(exist_ok=True)
photos = {"astronaut": d.astronaut(), "chelsea": d.chelsea(), "coffee": d.coffee(), "rocket": d.rocket(),
          "motorcycle_l": d.stereo_motorcycle()[0], "motorcycle_r": d.stereo_motorcycle()[1]}
for name, im in zip(("china", "flower"), load_sample_images().images):
    photos[name] = im
for f in sorted(glob.glob("/usr/share/backgrounds/mate/nature/*.jpg")):
    photos[Path(f).stem] = np.asarray(Image.open(f).convert("RGB"))
rng = np.random.default_rng(0)
n = 0
for name, im in photos.items():
    im = Image.fromarray(np.asarray(im)[..., :3])
    im.save(out / f"{name}.jpg", quality=92); n += 1
    w, h = im.size
    for k in range(5):
        s = np.sqrt(rng.uniform(0.3, 1.0))
        cw, ch = int(w * s), int(h * s)
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        im.crop((x, y, x + cw, y + ch)).save(out / f"{name}_crop{k}.jpg", quality=92); n += 1
print(n, "files from", len(photos), "photos")
