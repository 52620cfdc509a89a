"""Regenerate docs/images/faces.png: detection and FFHQ alignment on a photo that ships with matplotlib.

    python docs/faces_figure.py

Left: Grace Hopper's portrait (matplotlib's sample_data) with the detected box,
the five landmarks and the FFHQ crop square; middle: the FFHQ crop the model
sees; right: the `box` crop at DeepfakeBench's margin 1.3.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "docs" / "images" / "faces.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.cbook
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from defax_keras.faces import FaceDetector, align_face, box_quad, ffhq_quad, landmarks_in_crop

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as picture:
        photo = np.asarray(picture.convert("RGB"))
    face = FaceDetector().detect(photo)[0]
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1.0, 1.17, 1.17]})
    axes[0].imshow(photo)
    x1, y1, x2, y2 = face.box
    axes[0].add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="#ffd400", lw=2, label=f"MTCNN box ({face.confidence:.3f})"))
    quad = ffhq_quad(face.landmarks)
    axes[0].add_patch(plt.Polygon(quad, closed=True, fill=False, color="#00e0ff", lw=2, ls="--", label="FFHQ crop"))
    axes[0].add_patch(plt.Polygon(box_quad(face.box, 1.3), closed=True, fill=False, color="#ff5ac8", lw=1.5, ls=":", label="box crop, margin 1.3"))
    points = np.array(list(face.landmarks.values()))
    axes[0].scatter(points[:, 0], points[:, 1], s=18, c="#ff3030", zorder=3, label="landmarks")
    axes[0].legend(loc="lower left", fontsize=8, framealpha=0.85)
    axes[0].set_title("detection (matplotlib's grace_hopper.jpg)")
    crop = align_face(photo, face, 256)
    axes[1].imshow(crop)
    inside = landmarks_in_crop(face, quad, 256)
    axes[1].scatter([p[0] for p in inside.values()], [p[1] for p in inside.values()], s=18, c="#ff3030")
    axes[1].axhline(inside["left_eye"][1], color="#00e0ff", lw=0.8, ls="--")
    axes[1].set_title("FFHQ alignment, 256 px (as the 140K set)")
    axes[2].imshow(align_face(photo, face, 256, alignment="box", margin=1.3))
    axes[2].set_title("box alignment, margin 1.3 (DeepfakeBench)")
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=90)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
