"""`defax explain`: where a detector looked, per image and method, as files a paper can use.

Output folder:
  * `NNN_<image name>/<column>.png`: the image with the map overlaid, titled
    with the verdict; `<column>.npy`: the raw map (see README: CAMs and the
    attention map at feature resolution, LIME per pixel).
  * `grid.png`: rows = images grouped real/fake x correct/misclassified,
    columns = original and each method (the paper's figure).
  * `summary.json`: per image its label, P(fake), verdict, explained class
    and files; files skipped and why.
  * with faithfulness: `faithfulness.json` (curves and AUCs per map, over all
    images and per explained class) and `faithfulness.png`.

A column is a method at a target: `gradcam-local`, `gradcam-global`,
`gradcam++-local`, `scorecam-global`, `eigencam-global`, ..., `lime`, `attention`.

A map with no positive value (no positive evidence for the explained class,
e.g. when the ReLU of Grad-CAM's weighted sum erases everything) is "blank":
its overlay and grid cell say so instead of showing an empty heat map, and
`summary.json` lists it per image under `blank`, with the notice under `notes`.

Faces (`faces=`, a `FaceSettings`): each face found in a photo becomes its
own explained item, `NNN_<photo>_face<k>`, on its aligned crop (the input the
model scores), with its box and landmarks in `summary.json`; `photos/` holds
each photo with its faces boxed. Photos without a face are listed under
`faces.no_face` (or explained whole with `no_face="whole"`). Under `off`, and
under `auto` for aligned crops, every image is explained whole as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import re
import warnings
from pathlib import Path

import numpy as np

from defax_keras.constants import CLASS_NAMES
from defax_keras.data.files import (
    ImageFileError,
    collect_image_files,
    label_from_path,
    load_image,
)
from defax_keras.errors import DefaxError
from defax_keras.explain import faithfulness as faith
from defax_keras.explain.cam import (
    CAM_METHODS,
    SCORE_CAM_MAPS,
    TF_KERAS_VIS_ONLY,
    blank_maps,
    keras_eigen_cam,
    keras_grad_cam,
    tf_keras_vis_cam,
    upsample,
)
from defax_keras.explain.figures import (
    blank_notice,
    caption,
    overlay,
    save_faithfulness_plot,
    save_grid,
    save_overlay,
    save_photo_faces,
)
from defax_keras.explain.lime import LIME_SAMPLES, lime_explanation, top_superpixels
from defax_keras.explain.model import attention_model, build_explain_model, explain_targets, has_attention, resolve_targets
from defax_keras.faces.scoring import aggregate
from defax_keras.faces.settings import FaceSettings

logger = logging.getLogger(__name__)

METHODS = (*CAM_METHODS, "lime", "attention")
CLASS_CHOICES = {"real": 0, "fake": 1}
GRID_ROWS = 12
GROUPS = ("real-correct", "real-misclassified", "fake-correct", "fake-misclassified", "unlabelled")


def resolve_methods(model, methods, target: str) -> list[tuple[str, str | None]]:
    """`(method, target)` columns for the requested methods; `all` keeps what this model and backend support."""
    import keras

    methods = [m.strip().lower() for item in methods for m in str(item).split(",") if m.strip()]
    unknown = [m for m in methods if m not in (*METHODS, "all")]
    if unknown:
        raise DefaxError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)} or all")
    explicit = "all" not in methods
    wanted = methods if explicit else list(METHODS)
    backend = keras.backend.backend()
    columns = []
    for method in dict.fromkeys(wanted):
        if method in CAM_METHODS:
            if method in TF_KERAS_VIS_ONLY and backend != "tensorflow":
                if explicit:
                    raise DefaxError(f"{method} uses tf-keras-vis, which needs the TensorFlow backend; on {backend} use gradcam, eigencam, lime or attention")
                continue
            if not explain_targets(model) and not explicit:
                continue
            columns += [(method, t) for t in resolve_targets(model, target)]
        elif method == "attention":
            if explicit or has_attention(model):
                attention_model(model)  # raises the one-line error for models without cross-attention
                columns.append(("attention", None))
        else:
            columns.append((method, None))
    return columns


def column_name(method: str, target: str | None) -> str:
    return method if target is None else f"{method}-{target}"


def _quietly(function, *args, **kwargs):
    """tf-keras-vis calls `model.predict` with progress bars and retracing warnings; keep stdout for results."""
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return function(*args, **kwargs)
    finally:
        tf_logger.setLevel(level)


class Explainer:
    """One model's explanation methods, with the explain models built once and reused."""

    def __init__(self, model, batch_size: int = 16, lime_samples: int = LIME_SAMPLES, score_cam_maps: int = SCORE_CAM_MAPS, seed: int = 0):
        import keras

        self.model = model
        self.batch_size = batch_size
        self.lime_samples = lime_samples
        self.score_cam_maps = score_cam_maps
        self.seed = seed
        self.backend = keras.backend.backend()
        self._models = {}

    def explain_model(self, target: str, offset: bool = False):
        """The flat explain model at `target`, built once per Explainer."""
        key = (target, offset)
        if key not in self._models:
            self._models[key] = build_explain_model(self.model, target, offset=offset)
        return self._models[key]

    def feature_model(self, target: str):
        """images -> the branch's `feature_map` `[B, h, w, C]` (what EigenCAM decomposes), built once."""
        import keras

        from defax_keras.explain.model import FEATURE_LAYER

        key = ("features", target)
        if key not in self._models:
            explain_model = self.explain_model(target)
            self._models[key] = keras.Model(explain_model.inputs[0], explain_model.get_layer(FEATURE_LAYER).output)
        return self._models[key]

    def predict(self, images) -> np.ndarray:
        import keras

        images = np.asarray(images, np.float32)
        chunks = [
            keras.ops.convert_to_numpy(self.model(images[i : i + self.batch_size], training=False))
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(chunks).astype(np.float64)

    def raw_maps(self, method: str, target: str | None, images, classes) -> np.ndarray:
        """The method's raw maps for a batch: `[B, h, w]` (CAMs, attention) or `[B, S, S]` (LIME)."""
        images = np.asarray(images, np.float32)
        if method == "lime":
            return np.stack(
                [
                    lime_explanation(self.model, image, c, self.lime_samples, self.batch_size, seed=self.seed)[0]
                    for image, c in zip(images, classes)
                ]
            )
        outputs = []
        for start in range(0, len(images), self.batch_size):
            chunk, chunk_classes = images[start : start + self.batch_size], classes[start : start + self.batch_size]
            if method == "attention":
                if "attention" not in self._models:
                    self._models["attention"] = attention_model(self.model)
                outputs.append(np.asarray(self._models["attention"](chunk, training=False)))
            elif method == "eigencam":
                outputs.append(keras_eigen_cam(self.feature_model(target), chunk))
            elif method == "gradcam" and self.backend != "tensorflow":
                outputs.append(keras_grad_cam(self.explain_model(target, True), chunk, chunk_classes))
            else:
                maps = _quietly(tf_keras_vis_cam, method, self.explain_model(target, False), chunk, chunk_classes, self.score_cam_maps)
                outputs.append(maps)
        return np.concatenate(outputs).astype(np.float32)

    @staticmethod
    def heat(method: str, raw, image_size: int) -> np.ndarray:
        """Maps `[B, S, S]` in [0, 1] for drawing and for ordering pixels (LIME: its positive evidence)."""
        if method == "lime":
            positive = np.maximum(raw, 0)
            scale = positive.reshape(len(raw), -1).max(axis=1).reshape(-1, 1, 1)
            return positive / np.maximum(scale, 1e-12)
        return upsample(raw, image_size)


def _safe_stem(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem)[:60] or "image"


def _group(label, predicted: int) -> str:
    if label is None:
        return "unlabelled"
    return f"{CLASS_NAMES[label]}-{'correct' if label == predicted else 'misclassified'}"


def _grid_rows(records: list[dict], limit: int = GRID_ROWS) -> list[dict]:
    """Up to `limit` images, taken in turn from each group, shown group by group."""
    by_group = {g: [r for r in records if r["group"] == g] for g in GROUPS}
    chosen, round_index = [], 0
    while len(chosen) < min(limit, len(records)):
        for group in GROUPS:
            if round_index < len(by_group[group]) and len(chosen) < limit:
                chosen.append(by_group[group][round_index])
        round_index += 1
    return sorted(chosen, key=lambda r: (GROUPS.index(r["group"]), r["index"]))


def _load_images(inputs, image_size: int, max_images: int | None):
    files, ignored = collect_image_files(inputs)
    if max_images:
        files = files[:max_images]
    images, kept, skipped = [], [], []
    for path in files:
        try:
            images.append(load_image(path, image_size))
            kept.append(path)
        except ImageFileError as exc:
            skipped.append({"path": path, "reason": str(exc)})
            logger.debug("skipped %s: %s", path, exc)  # listed at the end and in summary.json
    if not images:
        raise DefaxError(f"none of the {len(files)} image files could be read (first: {skipped[0]['path']}: {skipped[0]['reason']})")
    return np.stack(images), kept, skipped, ignored


PHOTO_SIDE = 1024
"""Photos are kept for their boxed figure at most this long on their longer side."""


def _load_faces(inputs, image_size: int, max_images: int | None, settings: FaceSettings):
    """Model inputs per item (a face's aligned crop, or a whole image), the items, the photos with faces, the faceless.

    `FaceScorer.prepare` decides per file, as scoring does: aligned crops (under `auto`) whole,
    decoded exactly as `_load_images` decodes them; other photos face by face.
    """
    from defax_keras.data.formats import decode_with_pil
    from defax_keras.faces.detector import FaceDetector
    from defax_keras.faces.scoring import FaceScorer

    files, ignored = collect_image_files(inputs)
    if max_images:
        files = files[:max_images]
    pixels, items, photos, no_face, skipped = [], [], [], [], []
    with FaceDetector.from_settings(settings) as detector:
        scorer = FaceScorer(None, image_size, settings, detector=detector)  # prepare() only: the Explainer scores
        for path in files:
            photo, inputs_ = scorer.prepare(path)
            if photo.error is not None:
                skipped.append({"path": path, "reason": photo.error})
                logger.debug("skipped %s: %s", path, photo.error)
                continue
            if photo.scored == "no-face":
                no_face.append({"path": path, "label": label_from_path(path)})
                continue
            if not photo.faces:
                items.append({"path": path, **({"face_note": "no face found; the whole image was explained"} if photo.scored == "whole-no-face" else {})})
                pixels.append(inputs_[0])
                continue
            image = decode_with_pil(Path(path).read_bytes())
            scale = min(1.0, PHOTO_SIDE / max(image.shape[:2]))
            if scale < 1.0:
                from PIL import Image

                image = np.asarray(Image.fromarray(image).resize((round(image.shape[1] * scale), round(image.shape[0] * scale)), Image.BILINEAR))
            photos.append({"path": path, "label": label_from_path(path), "faces": [], "image": image, "scale": scale})
            for k, (face, crop) in enumerate(zip(photo.faces, inputs_)):
                items.append({"path": path, "face": k, **face.face.to_json(), "photo": len(photos) - 1})
                pixels.append(crop)
    if not items and not no_face:
        raise DefaxError(f"none of the {len(files)} image files could be read (first: {skipped[0]['path']}: {skipped[0]['reason']})")
    stacked = np.stack(pixels) if pixels else np.zeros((0, image_size, image_size, 3), np.float32)
    return stacked, items, photos, no_face, skipped, ignored


@dataclasses.dataclass
class ExplanationResult:
    """What `explain` computed: per image its verdict and, per column (method and branch), raw and drawable maps.

    `raw_maps[name]` is `[B, h, w]` (CAMs, attention) or `[B, S, S]` (LIME);
    `heat_maps[name]` is `[B, S, S]` in [0, 1], aligned with `pixels`.
    `write_explanations` turns it into files.
    """

    model_name: str
    model_path: str | None
    image_size: int
    columns: list[str]
    explained_class: str
    lime_samples: int | None
    records: list[dict]
    pixels: np.ndarray
    raw_maps: dict[str, np.ndarray]
    heat_maps: dict[str, np.ndarray]
    skipped: list[dict]
    ignored_files: list[str]
    faithfulness: dict | None = None
    """The full deletion/insertion report (curves included), when asked for."""
    face_settings: dict | None = None
    """The `FaceSettings` used (`FaceSettings.to_dict()`)."""
    photos: list[dict] = dataclasses.field(default_factory=list)
    """The photos explained face by face: `path`, `label`, `p_fake` (their faces' aggregate), `faces` (the items'
    folders, boxes and P(fake)), `figure`; `image` (at most `PHOTO_SIDE` px) and `scale` for drawing."""
    no_face: list[dict] = dataclasses.field(default_factory=list)
    """Photos in which no face was found (not explained): `path`, `label`."""

    def blank(self) -> dict[str, np.ndarray]:
        """Per column, per image: whether the map is all zero (no positive evidence for the explained class)."""
        if not self.records:
            return {name: np.zeros(0, bool) for name in self.columns}
        return {name: blank_maps(self.raw_maps[name]) for name in self.columns}

    def notes(self, record: dict) -> dict[str, str]:
        """The notices for one image's blank maps, by column."""
        return {
            name: blank_notice(record["explained_class"])
            for name, flags in self.blank().items()
            if flags[record["index"]]
        }

    def summary(self) -> dict:
        """The content of `summary.json`: images with verdicts and files, skipped files, faithfulness AUCs."""
        images = []
        for record in self.records:
            files = {name: f"{record['folder']}/{name}.png" for name in self.columns}
            notes = self.notes(record)
            images.append({**{k: v for k, v in record.items() if k != "index"}, "files": files, "blank": list(notes), "notes": notes})
        summary = {
            "model": self.model_name,
            "model_path": self.model_path,
            "image_size": self.image_size,
            "columns": self.columns,
            "explained_class": self.explained_class,
            "lime_samples": self.lime_samples,
            "images": images,
            "skipped": self.skipped,
            "ignored_files": len(self.ignored_files),
        }
        if self.photos or self.no_face:  # only when faces were looked for and found (or missed)
            summary["faces"] = {
                "settings": self.face_settings,
                "photos": [{k: v for k, v in photo.items() if k not in ("image", "scale")} for photo in self.photos],
                "no_face": self.no_face,
            }
        if self.faithfulness is not None:
            summary["faithfulness"] = {
                group: {name: {k: v for k, v in values.items() if k not in ("deletion", "insertion")} for name, values in methods.items()}
                for group, methods in self.faithfulness.items()
                if isinstance(methods, dict)
            }
        return summary


def explain(
    model,
    images,
    methods=("gradcam",),
    target: str = "both",
    explained_class: str = "predicted",
    lime_samples: int = LIME_SAMPLES,
    faithfulness: bool = False,
    faithfulness_baseline: str = "blur",
    batch_size: int = 16,
    score_cam_maps: int = SCORE_CAM_MAPS,
    max_images: int | None = None,
    seed: int = 0,
    progress=None,
    faces: FaceSettings | None = None,
) -> ExplanationResult:
    """Explain a model's verdicts on image files with class-activation maps, LIME or cross-attention.

    Args:
        model: a detector (`keras.Model`) or the path of a saved one (`.keras`, run directory).
        images: image files and folders (walked recursively; labels from folder names real/fake when present).
        methods: any of `gradcam`, `gradcam++`, `scorecam`, `eigencam`, `lime`, `attention`, or `all`.
        target: `local`, `global` or `both` (the branches class-activation maps are taken at).
        explained_class: `predicted`, `real` or `fake`.
        faithfulness: also compute deletion/insertion curves against a random map.
        faces: a `FaceSettings`; default: the settings the model was trained with, else `FaceSettings()`
            (`auto`: aligned crops whole, each face of other photos on its own aligned crop).

    Returns:
        An `ExplanationResult`; `write_explanations(result, folder)` writes overlays, maps, the grid and summary.json.

    Example:
        >>> import defax_keras as dk
        >>> result = dk.explain(run_dir, images, methods=["gradcam"])
        >>> result.columns
        ['gradcam-local']
        >>> result.heat_maps["gradcam-local"].shape            # [images, height, width] in [0, 1]
        (2, 112, 112)
        >>> dk.write_explanations(result, "explanations")       # overlays, raw maps, grid.png, summary.json
        PosixPath('explanations')
    """
    from defax_keras.models.loading import as_model

    if explained_class not in ("predicted", *CLASS_CHOICES):
        raise DefaxError(f"--class must be predicted, real or fake, not {explained_class!r}")
    if faithfulness_baseline not in faith.BASELINES:
        raise DefaxError(f"faithfulness baseline must be one of {', '.join(faith.BASELINES)}, not {faithfulness_baseline!r}")
    if lime_samples < 10:
        raise DefaxError(f"--lime-samples must be at least 10, got {lime_samples}")
    model, model_path = as_model(model)
    columns = resolve_methods(model, methods, target)
    size = model.image_size
    settings = faces if faces is not None else (FaceSettings.for_model(model_path) if model_path is not None else FaceSettings())
    if settings.mode == "off":
        pixels, paths, skipped, ignored = _load_images(images, size, max_images)
        items, photos, no_face = [{"path": path} for path in paths], [], []
    else:
        pixels, items, photos, no_face, skipped, ignored = _load_faces(images, size, max_images, settings)
    explainer = Explainer(model, batch_size, lime_samples, score_cam_maps, seed)
    p_fake = explainer.predict(pixels)[:, 1] if len(pixels) else np.zeros(0)
    predicted = (p_fake >= 0.5).astype(int)
    classes = predicted if explained_class == "predicted" else np.full(len(items), CLASS_CHOICES[explained_class])
    records = []
    for index, item in enumerate(items):
        path = item["path"]
        label = label_from_path(path)
        stem = _safe_stem(path) + (f"_face{item['face']}" if "face" in item else "")
        records.append(
            {
                "index": index,
                "path": path,
                "label": label,
                "p_fake": float(p_fake[index]),
                "predicted": CLASS_NAMES[predicted[index]],
                "explained_class": CLASS_NAMES[classes[index]],
                "group": _group(label, int(predicted[index])),
                "folder": f"{index:03d}_{stem}",
                **{key: value for key, value in item.items() if key not in ("path", "photo")},
            }
        )
        if "photo" in item:
            photos[item["photo"]]["faces"].append({"folder": records[-1]["folder"], "face": item["face"], "box": item["box"], "p_fake": float(p_fake[index])})
    for number, photo in enumerate(photos):
        photo["p_fake"] = aggregate([face["p_fake"] for face in photo["faces"]], settings.aggregate)
        photo["figure"] = f"photos/{number:03d}_{_safe_stem(photo['path'])}.png"
    raw_maps, heats = {}, {}
    for method, map_target in columns:
        name = column_name(method, map_target)
        if not len(pixels):  # every photo was faceless: nothing to explain, the photos are reported
            raw_maps[name] = heats[name] = np.zeros((0, size, size), np.float32)
            continue
        if progress:
            progress(f"{name}: {len(items)} image(s)")
        raw_maps[name] = explainer.raw_maps(method, map_target, pixels, classes)
        heats[name] = explainer.heat(method, raw_maps[name], size)
    names = [column_name(m, t) for m, t in columns]
    report = None
    if faithfulness and len(pixels):
        if progress:
            progress("faithfulness: deletion and insertion curves")
        report = _faithfulness(explainer, model, pixels, classes, heats, seed, faithfulness_baseline)
    return ExplanationResult(
        model_name=model.name,
        model_path=None if model_path is None else str(model_path),
        image_size=size,
        columns=names,
        explained_class=explained_class,
        lime_samples=lime_samples if "lime" in names else None,
        records=records,
        pixels=pixels,
        raw_maps=raw_maps,
        heat_maps=heats,
        skipped=skipped,
        ignored_files=ignored,
        faithfulness=report,
        face_settings=settings.to_dict(),
        photos=photos,
        no_face=no_face,
    )


def write_explanations(result: ExplanationResult, output) -> Path:
    """Per image and column an overlay PNG and the raw map (.npy), `grid.png`, `summary.json`, faithfulness files;
    with faces, `photos/` (each photo with its faces boxed)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    pictures, notices = {}, {}
    blank = result.blank()
    for name in result.columns:
        raw, heat = result.raw_maps[name], result.heat_maps[name]
        for record in result.records:
            i = record["index"]
            folder = output / record["folder"]
            folder.mkdir(exist_ok=True)
            outline = top_superpixels(raw[i]) if name == "lime" else None
            notice = blank_notice(record["explained_class"]) if blank[name][i] else None
            # a blank map is drawn as the bare image with its notice, not as a uniform wash of the colour map
            pictures[(i, name)] = overlay(result.pixels[i], None if notice else heat[i], outline)
            if notice:
                notices[(i, name)] = notice
            np.save(folder / f"{name}.npy", raw[i])
            save_overlay(folder / f"{name}.png", pictures[(i, name)], f"{name} for class {record['explained_class']}", caption(record), notice)
    originals = {r["index"]: result.pixels[r["index"]] for r in result.records}
    title = (
        f"{result.model_name}: explanations of the predicted class"
        if result.explained_class == "predicted"
        else f"{result.model_name}: explanations of class {result.explained_class}"
    )
    if result.records:
        save_grid(output / "grid.png", _grid_rows(result.records), result.columns, pictures, originals, title, notices)
    for photo in result.photos:
        (output / photo["figure"]).parent.mkdir(exist_ok=True)
        boxes = [[v * photo["scale"] for v in face["box"]] for face in photo["faces"]]
        labels = [f"face{face['face']}: P(fake) {face['p_fake']:.3f}" for face in photo["faces"]]
        save_photo_faces(output / photo["figure"], photo["image"], boxes, labels, f"{Path(photo['path']).name}: P(fake) {photo['p_fake']:.3f}")
    if result.faithfulness is not None:
        (output / "faithfulness.json").write_text(json.dumps(result.faithfulness, indent=2), encoding="utf-8")
        save_faithfulness_plot(output / "faithfulness.png", result.faithfulness["all"])
    (output / "summary.json").write_text(json.dumps(result.summary(), indent=2), encoding="utf-8")
    return output


def _faithfulness(explainer, model, pixels, classes, heats, seed: int, baseline: str) -> dict:
    size = model.image_size
    targets = explain_targets(model)
    grid = tuple(explainer.explain_model(targets[0]).get_layer("feature_map").output.shape[1:3]) if targets else (7, 7)
    maps = dict(heats)
    maps["random"] = np.stack([faith.random_map(grid, size, seed + i) for i in range(len(pixels))])
    per_method = {
        name: [
            faith.perturbation_curves(explainer.predict, pixels[i], maps[name][i], classes[i], seed=seed + i, baseline=baseline)
            for i in range(len(pixels))
        ]
        for name in maps
    }
    groups = {"all": np.ones(len(pixels), bool), **{f"explaining {n}": classes == c for c, n in enumerate(CLASS_NAMES)}}
    report = {"steps": faith.STEPS, "baseline": baseline, "random_grid": list(grid)}
    for group, chosen in groups.items():
        if chosen.any():
            report[group] = faith.summarize({name: [c for c, keep in zip(curves, chosen) if keep] for name, curves in per_method.items()})
    return report
