"""Instance masks from a detection task and a segmentation task together:
`instance_ids` for `export_saved_model(instance_masks=True)`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kerasmtl.layers.instance_masks import serving_instance_ids
from kerasmtl.metrics.instance import check_instance_rule
from kerasmtl.tasks.base import Task
from kerasmtl.tasks.detection import Detection
from kerasmtl.tasks.segmentation import Segmentation


def instance_ids_function(tasks: Sequence[Task], model_name: str = "model",
                          min_score: float = 0.0, overlap: str = "score",
                          grow: float = 0.0) -> Callable[[dict], dict]:
    """`outputs -> outputs + {"instance_ids": int32 [batch, height, width]}`
    for serving outputs of a model with exactly one `Detection` and one
    `Segmentation` task (see `kerasmtl.layers.serving_instance_ids`).

    Args:
        tasks: the model's tasks.
        model_name: str. Named in the error. Defaults to `"model"`.
        min_score: float. Detections scoring less make no instance.
            Defaults to `0.0`.
        overlap: `"score"` or `"centre"`: which box a pixel inside several
            boxes goes to (`kerasmtl.layers.instance_id_map`). Defaults to
            `"score"`.
        grow: float >= 0. Box footprint growth per side, as a share of the
            box's size. Defaults to `0.0`.

    Returns:
        A function of the serving outputs dict.

    Examples:

    >>> import kerasmtl as mtl
    >>> instance_ids_function([mtl.tasks.Regression("y")], "m")
    Traceback (most recent call last):
    ...
    ValueError: export_saved_model(instance_masks=True) needs exactly one detection and one segmentation task; model 'm' has detection tasks [] and segmentation tasks []. Export without instance_masks, or build the model with both tasks.
    """
    check_instance_rule(overlap, grow, "export_saved_model")
    detection = [t.name for t in tasks if isinstance(t, Detection)]
    segmentation = [t.name for t in tasks if isinstance(t, Segmentation)]
    if len(detection) != 1 or len(segmentation) != 1:
        raise ValueError(
            "export_saved_model(instance_masks=True) needs exactly one detection "
            f"and one segmentation task; model '{model_name}' has detection tasks "
            f"{detection} and segmentation tasks {segmentation}. Export without "
            "instance_masks, or build the model with both tasks."
        )

    def add_instance_ids(outputs: dict) -> dict:
        return {**outputs, "instance_ids": serving_instance_ids(
            outputs, detection[0], segmentation[0], min_score=min_score,
            overlap=overlap, grow=grow)}

    return add_instance_ids
