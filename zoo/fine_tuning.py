"""Fine-tuning from a preset: its weights copied into a model built for other
data (`kerasmtl train NAME --preset P` and `zoo.create_model(..., preset=P)`
with new labels): every layer of the same name and weight shapes keeps the
preset's weights; task heads whose task changed are rebuilt."""

from __future__ import annotations


def transfer_weights(source, target, print_fn=print) -> tuple[list[str], list[str]]:
    """Copies into `target` the weights of every layer of `source` with the
    same name and weight shapes; a task head whose task changed (other
    labels or tags) is rebuilt even where its shapes happen to match.

    Returns:
        `(kept, rebuilt)`: names of the layers with weights that were copied,
        and of those left as `target` built them (each with the reason).
    """
    source_layers = {layer.name: layer for layer in source.layers}
    changed_tasks = _changed_tasks(source, target)
    kept, rebuilt = [], []
    for layer in target.layers:
        if not layer.weights:
            continue
        old = source_layers.get(layer.name)
        task = next((t for t in changed_tasks
                     if layer.name == t or layer.name.startswith(f"{t}_")), None)
        if old is None:
            rebuilt.append(f"{layer.name} (not in the preset)")
        elif _shapes(old) != _shapes(layer):
            rebuilt.append(f"{layer.name} (shapes {_shapes(old)} in the preset, "
                           f"{_shapes(layer)} now)")
        elif task is not None:
            rebuilt.append(f"{layer.name} (task '{task}' changed)")
        else:
            layer.set_weights(old.get_weights())
            kept.append(layer.name)
    print_fn(f"from the preset: kept {len(kept)} layer(s): {', '.join(kept) or 'none'}")
    print_fn(f"rebuilt {len(rebuilt)} layer(s): {', '.join(rebuilt) or 'none'}")
    return kept, rebuilt


def _shapes(layer) -> list[tuple]:
    return [tuple(w.shape) for w in layer.weights]


def _changed_tasks(source, target) -> list[str]:
    old = {t.name: t.get_config() for t in getattr(source, "tasks", [])}
    return [t.name for t in getattr(target, "tasks", [])
            if t.name in old and old[t.name] != t.get_config()]
