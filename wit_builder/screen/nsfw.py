"""An NSFW score per image: NudeNet's 320n detector (the ONNX file its wheel ships), on onnxruntime.

NudeNet 3.4 is a YOLOv8n detector of 18 body-part classes at 320x320. An image's `nsfw_score`
is the highest confidence any box gets for one of the exposed-nudity classes (`NSFW_CLASSES`);
0 means the model found nothing of the kind. Covered parts, faces, feet, bellies and armpits
do not count. We run the model ourselves rather than through `nudenet.NudeDetector`: the same
preprocessing (pad to a square at the bottom and right, resize, RGB in [0, 1]) on a batch of
images at once, and the score read from the raw output without its per-box Python loop.

No other NSFW model with weights inside a registry package was found: nsfwpy, nsfwpy-onnx,
nudenetv2 and the `nsfw` package download theirs at run time (not allowed here).

The session is built once per executor process (`detector()`), with one intra-op thread: a
Spark task is one core's work.
"""

from __future__ import annotations

import os

import numpy as np

from wit_builder import per_process

SIZE = 320
MODEL_FILE = "320n.onnx"
LABELS = ("FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
          "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
          "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
          "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
          "BUTTOCKS_COVERED")
NSFW_CLASSES = ("BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED",
                "MALE_GENITALIA_EXPOSED", "ANUS_EXPOSED")
FACE_CLASSES = ("FACE_FEMALE", "FACE_MALE")
_NSFW_ROWS = np.array([4 + LABELS.index(c) for c in NSFW_CLASSES])  # output rows: 4 box values first
_FACE_ROWS = np.array([4 + LABELS.index(c) for c in FACE_CLASSES])


def model_path() -> str:
    """Where the nudenet package keeps its model; ImportError when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nudenet is not installed (pip install nudenet)")
    return os.path.join(list(spec.submodule_search_locations)[0], MODEL_FILE)


class Detector:
    """NudeNet's detector on a batch of RGB images: `scores` and `raw` outputs."""

    def __init__(self, path: str | None = None, threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path or model_path(), options,
                                                    providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def raw(self, images: list[np.ndarray]) -> np.ndarray:
        """The model's output for RGB uint8 images: (batch, 22, boxes), each box's centre x,
        centre y, width, height (in the padded square's 320-pixel frame) and 18 class scores."""
        import cv2

        batch = np.empty((len(images), 3, SIZE, SIZE), np.float32)
        for i, rgb in enumerate(images):
            side = max(rgb.shape[:2])
            square = np.zeros((side, side, 3), np.uint8)
            square[:rgb.shape[0], :rgb.shape[1]] = rgb
            batch[i] = cv2.resize(square, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) \
                .transpose(2, 0, 1) * np.float32(1 / 255)
        return self.session.run(None, {self.input: batch})[0]

    def scores(self, images: list[np.ndarray]) -> list[float]:
        """Each image's nsfw_score."""
        return [score_of(output) for output in self.raw(images)] if images else []


def score_of(raw: np.ndarray) -> float:
    """One image's nsfw_score from its raw output: the best exposed-nudity class confidence of
    any box."""
    return round(float(raw[_NSFW_ROWS].max()), 4)


def face_boxes(raw: np.ndarray, shape: tuple[int, int], min_score: float) -> list[list[int]]:
    """The face boxes (x, y, w, h in the image's pixels) of one image's raw output, after
    non-maximum suppression, as nudenet's own postprocessing finds them."""
    import cv2

    faces = raw[_FACE_ROWS].max(axis=0)
    keep = np.flatnonzero(faces >= min_score)
    scale = max(shape[:2]) / SIZE
    boxes = [[float((raw[0, i] - raw[2, i] / 2) * scale), float((raw[1, i] - raw[3, i] / 2) * scale),
              float(raw[2, i] * scale), float(raw[3, i] * scale)] for i in keep]
    picked = cv2.dnn.NMSBoxes(boxes, [float(faces[i]) for i in keep], min_score, 0.45)
    return [_clip(boxes[i], shape) for i in np.asarray(picked).reshape(-1)]


def _clip(box: list[float], shape: tuple[int, int]) -> list[int]:
    height, width = shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(width, int(round(box[0] + box[2]))), min(height, int(round(box[1] + box[3])))
    return [x0, y0, max(0, x1 - x0), max(0, y1 - y0)]


def detector() -> Detector:
    """This process's detector, built on first use."""
    return per_process.get("nsfw detector", None, Detector)
