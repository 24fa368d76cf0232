"""The quickstart (`kerasmtl quickstart`, `make quickstart`): the main job.

Trains a multi-task model on the built-in synthetic tabular data (three tasks
of different kinds, labels missing at random), trains single-task baselines
with the same trunk and budget, prints the per-task metrics with the
comparison and Δm, exports the multi-task model as a SavedModel and says how
to serve it. Runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from kerasmtl.data import synthetic_tabular
from kerasmtl.evaluation import compare_with_single_task
from kerasmtl.export import export_saved_model
from kerasmtl.tasks import synthetic_tabular_tasks


def run_quickstart(
    build_fn: Callable,
    export_dir: str = "exported/quickstart",
    epochs: int = 8,
    num_examples: int = 1500,
    num_eval_examples: int = 1000,
    missing_rate: float = 0.3,
    batch_size: int = 64,
    seed: int = 0,
    print_fn: Callable[[str], None] = print,
) -> dict:
    """Runs the quickstart; returns the comparison and the export path.

    Args:
        build_fn: `build_fn(tasks) -> MultiTaskModel` (uncompiled); builds the
            multi-task model and, with one task, each single-task baseline.
        export_dir: base path of the SavedModel export.
        epochs, batch_size: the training budget, the same for every model.
        num_examples, num_eval_examples: sizes of the train and eval sets.
        missing_rate: share of labels marked missing.
        seed: seed of data and training.
        print_fn: where the report goes.
    """
    start = time.perf_counter()
    tasks = synthetic_tabular_tasks()
    train = synthetic_tabular(num_examples, missing_rate=missing_rate, seed=seed)
    evaluation = synthetic_tabular(
        num_eval_examples, missing_rate=missing_rate, seed=seed + 10_000
    )
    num_features = train[0].shape[1]
    print_fn(
        f"kerasmtl quickstart: one model, {len(tasks)} tasks ("
        + ", ".join(f"{t.name}: {t.kind}" for t in tasks) + ")"
    )
    print_fn(
        f"synthetic data: {num_examples} training rows, {num_eval_examples} eval rows;"
        " missing labels are masked per element, never dropped:"
    )
    for task in tasks:
        _, known = task.standardize_labels(train[1][task.name])  # the task's own mask
        known = np.asarray(known)
        print_fn(f"  {task.name:8s} {int(known.sum()):6d} known / {known.size} label elements")

    comparison = compare_with_single_task(
        build_fn,
        tasks,
        train,
        evaluation,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
    )
    print_fn("")
    print_fn(
        f"multi-task vs single-task models (same trunk, {epochs} "
        f"epoch{'s' if epochs != 1 else ''}, batch "
        f"{batch_size}), on the eval set:"
    )
    print_fn(comparison.table())

    model = comparison.multi_task_model
    print_fn("")
    print_fn("multi-task model, all metrics on the eval set:")
    for task_name, metrics in comparison.mtl_report.items():
        values = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        print_fn(f"  {task_name:8s} {values}")
    print_fn(f"  final task weights ({type(model.weighting).__name__}): "
             + ", ".join(f"{k}={v:.3f}" for k, v in model.weighting.current_weights().items()))

    version_dir = export_saved_model(model, export_dir, example_signatures=True)
    base = os.path.abspath(export_dir)
    name = os.path.basename(base.rstrip(os.sep)) or "model"
    print_fn("")
    print_fn(f"exported SavedModel: {version_dir}")
    # kerasmtl serve first: it is installed already, Docker may not be.
    print_fn("serve it (TF Serving's REST API on port 8501):")
    print_fn(f"  kerasmtl serve {base} --name {name}")
    print_fn(
        f"  curl -d '{{\"instances\": [{[0] * num_features}]}}' "
        f"localhost:8501/v1/models/{name}:predict"
    )
    print_fn("the same directory runs unchanged in TF Serving:")
    print_fn(
        f"  docker run -p 8501:8501 -v {base}:/models/{name} -e MODEL_NAME={name} "
        "tensorflow/serving"
    )
    print_fn("or call it in Python, no kerasmtl needed:")
    print_fn(
        f"  tf.saved_model.load('{version_dir}').signatures['serving_default']"
        f"(features=tf.zeros([1, {num_features}]))"
    )
    print_fn(f"done in {time.perf_counter() - start:.0f} s")
    return {"comparison": comparison, "export_path": version_dir}
