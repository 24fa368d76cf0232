"""What a `MultiTaskModel` serves: each task's post-processing of the model's
outputs (`postprocess`) and the outputs of an exported signature
(`serving_outputs`). A mixin of `MultiTaskModel`; the tasks own the work."""

from __future__ import annotations


class ServingOutputsMixin:
    """`postprocess` and `serving_outputs` over the model's `_tasks`."""

    def postprocess(self, outputs: dict) -> dict:
        """Each task's serving post-processing of `outputs` (e.g. argmax ids)."""
        result = {}
        for task in self._tasks:
            result.update(task.postprocess(outputs[task.name]))
        return result

    def serving_outputs(self, outputs: dict, geometry=None) -> dict:
        """What an exported signature returns: each task's `serving_outputs`
        (its raw output under `raw_output_name` plus `postprocess`), mapped
        back to the request's image by `geometry` (a
        `kerasmtl.preprocessors.ImageGeometry`, or None for no image input)."""
        raw_names = {task.raw_output_name for task in self._tasks}
        result = {}
        for task in self._tasks:
            for key, value in task.serving_outputs(outputs[task.name], geometry).items():
                if key in result:
                    what = ("both a raw output and a post-processing output"
                            if key in raw_names else "an output of two tasks")
                    raise ValueError(
                        f"Serving output '{key}' of model '{self.name}' is {what}; "
                        "rename the task."
                    )
                result[key] = value
        return result
