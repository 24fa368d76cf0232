"""ESMM: the Entire Space Multi-task Model for conditional tasks.

Ma, Zhao, Huang, Zhu, Zheng and Gai, "Entire Space Multi-Task Model: An
Effective Approach for Estimating Post-Click Conversion Rate", SIGIR 2018.
A conversion can only follow a click, so the post-click conversion rate
`pCVR = p(conversion | click)` is learned through the product

```
pCTCVR = p(click and conversion) = pCTR * pCVR
```

Two towers read one shared embedding: the CTR tower gives `pCTR`, the CVR
tower `pCVR`. Both losses are taken over every impression (the entire space),
on the CTR and CTCVR labels; `pCVR` has no loss of its own, which removes the
sample-selection bias of training a CVR model on clicked impressions only.
Written from the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from kerasmtl.model import MultiTaskModel
from kerasmtl.sharing.layer_names import check_layer_names, tower
from kerasmtl.tasks import Task


def esmm(
    inputs,
    shared,
    ctr: Task,
    ctcvr: Task,
    *,
    cvr_tower: Sequence = (),
    cvr_name: str = "cvr",
    weighting=None,
    name: str | None = None,
) -> MultiTaskModel:
    """Builds an ESMM model (Ma et al., SIGIR 2018): `pCTCVR = pCTR * pCVR`.

    The model has two outputs, one per task: `ctr` (the CTR head on `shared`,
    through the task's `hidden_layers`, the CTR tower) and `ctcvr`, the
    product of `pCTR` and `pCVR`. `pCVR` is the output of the layer
    `cvr_name`, at the top of the CVR tower (read it with `cvr_probabilities`).
    Labels per impression: `ctr` 1 if clicked, `ctcvr` 1 if clicked and
    converted, -1 if unknown; there are no CVR labels. With the default
    weighting the loss is the paper's `L(ctr) + L(ctcvr)`.

    Args:
        inputs: Keras input tensor(s) of the model.
        shared: Keras tensor. The shared embedding (e.g. concatenated feature
            embeddings) both towers read.
        ctr: a one-label `MultiLabel` task (sigmoid probability), e.g.
            `MultiLabel("ctr", 1, hidden_layers=[64, 32])`.
        ctcvr: a one-label `MultiLabel` task with no `hidden_layers` (its
            output is a product, with no layers of its own; the CVR tower is
            `cvr_tower`).
        cvr_tower: sequence of int or `keras.layers.Layer`. The CVR tower
            (ints are Dense+ReLU widths; layers named `"<cvr_name>_tower_<i>"`).
            Defaults to `()`.
        cvr_name: str. Name of the layer that outputs `pCVR`. Defaults to
            `"cvr"`.
        weighting: passed to `MultiTaskModel`. Defaults to `None` (the sum).
        name: str or None. The model's name.

    Returns:
        A `MultiTaskModel` with outputs `{ctr.name: pCTR, ctcvr.name: pCTCVR}`.

    Examples:

    >>> import keras, kerasmtl as mtl
    >>> ids = keras.Input((3,), dtype="int32")
    >>> emb = keras.layers.Flatten()(keras.layers.Embedding(10, 4)(ids))
    >>> model = esmm(ids, emb, mtl.tasks.MultiLabel("ctr", 1),
    ...              mtl.tasks.MultiLabel("ctcvr", 1), cvr_tower=[8])
    >>> sorted(model.output_names), model.get_layer("cvr").output.shape
    (['ctcvr', 'ctr'], (None, 1))
    """
    builder = "esmm"
    for role, task in (("ctr", ctr), ("ctcvr", ctcvr)):
        if not task.predicts_one_probability:
            raise ValueError(
                f"esmm: `{role}` must be a one-label MultiLabel task (a sigmoid "
                f"probability), e.g. mtl.tasks.MultiLabel('{role}', 1). Received: "
                f"{task!r}"
            )
    if ctr.name == ctcvr.name:
        raise ValueError(f"esmm: `ctr` and `ctcvr` are both named '{ctr.name}'.")
    if ctcvr.hidden_layers or ctcvr.head != "independent":
        raise ValueError(
            f"esmm: task '{ctcvr.name}' has hidden_layers or a non-default head, "
            "but its output is pCTR * pCVR, with no layers of its own. Put the "
            "CVR tower in `cvr_tower=`."
        )
    if cvr_name in (ctr.name, ctcvr.name):
        raise ValueError(
            f"esmm: `cvr_name` '{cvr_name}' is also a task's name; layer names "
            "must be unique. Pass another `cvr_name`."
        )
    tasks = [ctr, ctcvr]
    check_layer_names(builder, inputs, [shared], tasks, "shared")
    p_ctr = ctr.build_head(shared)
    logits = keras.layers.Dense(1, name=f"{cvr_name}_logits", dtype="float32")(
        tower(cvr_name, cvr_tower, shared)
    )
    p_cvr = keras.layers.Activation("sigmoid", name=cvr_name, dtype="float32")(logits)
    p_ctcvr = keras.layers.Multiply(name=ctcvr.name, dtype="float32")([p_ctr, p_cvr])
    return MultiTaskModel(
        inputs,
        {ctr.name: p_ctr, ctcvr.name: p_ctcvr},
        name=name,
        tasks=tasks,
        weighting=weighting,
        shared_features=shared,
    )


def cvr_probabilities(
    model: keras.Model, x, cvr_name: str = "cvr", batch_size: int = 32
) -> np.ndarray:
    """`pCVR`, the post-click conversion rate an `esmm` model learned, for `x`.

    Args:
        model: a model built by `esmm`.
        x: the model's input for a batch.
        cvr_name: str. The `cvr_name` given to `esmm`. Defaults to `"cvr"`.
        batch_size: int. Prediction batch size. Defaults to `32`.

    Returns:
        An array `(num_examples, 1)` of probabilities.

    Examples:

    >>> import keras, numpy as np, kerasmtl as mtl
    >>> x = keras.Input((4,))
    >>> model = esmm(x, x, mtl.tasks.MultiLabel("ctr", 1),
    ...              mtl.tasks.MultiLabel("ctcvr", 1))
    >>> cvr_probabilities(model, np.ones((2, 4), "float32")).shape
    (2, 1)
    """
    try:
        layer = model.get_layer(cvr_name)
    except ValueError:
        raise ValueError(
            f"Model '{model.name}' has no layer '{cvr_name}'. Pass the `cvr_name` "
            "given to esmm() (only esmm models have a pCVR layer)."
        ) from None
    probe = keras.Model(model.input, layer.output)
    return np.asarray(probe.predict(x, batch_size=batch_size, verbose=0))
