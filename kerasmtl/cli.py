"""The `kerasmtl` command line: thin argument parsing over library functions.

    kerasmtl quickstart            train, compare with single-task models, export
    kerasmtl export MODEL BASE     export a saved .keras model as a SavedModel
    kerasmtl train NAME --data D   train a zoo model on data D, evaluate on dev, export
    kerasmtl evaluate NAME --data D  per-task dev report and Δm vs single-task models
    kerasmtl serve BASE --name N   serve a SavedModel base path over TF Serving's REST API
                                   (and its gRPC API with --grpc-port 8500)
    kerasmtl zoo list              list the zoo's models
    kerasmtl zoo card NAME         print a zoo model's card
    kerasmtl zoo presets           list the trained presets (zoo.create_model(NAME, preset=P))

`python -m kerasmtl ...` runs the same. Arguments are parsed before TensorFlow
is imported: `--help` and argument errors answer at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from kerasmtl import weighting_spec
from kerasmtl.cli_arguments import build_parser
from kerasmtl.quiet_tensorflow import start_tensorflow_quietly


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    start_tensorflow_quietly(args.command)
    try:
        return args.handler(args) or 0
    except ValueError as error:  # bad input: a clear message, not a traceback
        print(f"kerasmtl {args.command}: error: {error}", file=sys.stderr)
        return 2


def _weighting_factory(spec: str | None):
    """A zero-argument factory of the weighting `spec` names, or None."""
    if spec is None:
        return None
    return weighting_spec.weighting_factory(spec)


def _recipe_options(args) -> dict:
    return {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
            "optimizer": args.optimizer, "weighting": _weighting_factory(args.weighting),
            "dev_fraction": args.dev_fraction}


def _train(args) -> int:
    import tempfile

    from kerasmtl.multi_worker import cluster_from_tf_config

    paths = {
        "save_path": args.save or os.path.join("exported", f"{args.model}.keras"),
        "export_dir": args.export_dir or os.path.join("exported", args.model),
        "save_preset": args.save_preset, "tensorboard_dir": args.tensorboard,
        "checkpoint_dir": args.checkpoint_dir,
    }
    cluster = cluster_from_tf_config()
    strategy = None
    with tempfile.TemporaryDirectory(prefix="kerasmtl-worker-") as scratch:
        if cluster is not None:
            import tensorflow as tf

            # TF_CONFIG names several workers: every worker runs this same
            # command (README, "Training on several machines").
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            paths = _worker_paths(paths, worker=cluster[1], scratch=scratch)
        from zoo.training import train_zoo_model

        train_zoo_model(
            args.model, args.data, **_recipe_options(args), **paths,
            preset=args.preset, command=_command_line(args),
            early_stopping=args.early_stopping, monitor=args.monitor,
            resume=args.resume, strategy=strategy,
        )
    return 0


def _worker_paths(paths: dict, *, worker: int, scratch: str) -> dict:
    """Where worker `worker` of a multi-worker run writes. Worker 0 (the
    chief) writes what was asked; every other worker saves and exports the
    same model into `scratch` (discarded: saving may run collective ops, so
    all workers save, as TensorFlow's multi-worker guide says), writes no
    TensorBoard logs, and keeps its own backup in `<checkpoint_dir>.worker-<i>`
    (each worker restores its own on --resume)."""
    if worker == 0:
        return paths
    paths = dict(paths)
    for key in ("save_path", "export_dir", "save_preset"):
        if paths[key]:
            paths[key] = os.path.join(scratch, key, os.path.basename(paths[key]))
    paths["tensorboard_dir"] = None
    if paths["checkpoint_dir"]:
        paths["checkpoint_dir"] = f"{paths['checkpoint_dir'].rstrip(os.sep)}.worker-{worker}"
    return paths


def _command_line(args) -> str:
    """The command as typed (recorded on a preset's card)."""
    import shlex

    argv = getattr(args, "argv", None)
    if argv is None:
        argv = sys.argv[1:]
    return shlex.join(["kerasmtl", *argv])


def _evaluate(args) -> int:
    from zoo.training import compare_zoo_model

    comparison = compare_zoo_model(args.model, args.data, **_recipe_options(args))
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(comparison.to_dict(), f, indent=2)
    return 0


def _quickstart(args) -> int:
    import zoo  # the CLI's lookup by name is the one place kerasmtl uses the zoo
    from kerasmtl.quickstart import run_quickstart

    def build_fn(tasks):
        # Single-task baselines get plain training: a weighting of one task
        # would only rescale its learning rate.
        chosen = _weighting_factory(args.weighting)() if len(tasks) > 1 else None
        return zoo.create_model("tabular_mtl_mlp", tasks=tasks, weighting=chosen)

    run_quickstart(
        build_fn,
        export_dir=args.export_dir,
        epochs=args.epochs,
        num_examples=args.examples,
        missing_rate=args.missing_rate,
        seed=args.seed,
    )
    return 0


def _export(args) -> int:
    if args.preset is not None:
        # `export --preset P BASE`: argparse fills the first free positional.
        base_path = args.base_path or args.model
        if base_path is None or (args.model and args.base_path):
            raise ValueError("With --preset, give only the base path: "
                             "`kerasmtl export --preset P BASE`.")
        import zoo
        from kerasmtl.export import export_saved_model

        preset = zoo.get_preset(args.preset)
        card_settings = preset.export_settings  # checked once
        instances = _instance_arguments(args, card_settings)
        if args.instance_masks and card_settings:
            print(f"instance masks: {instances} (the preset's settings where no flag "
                  "is given)")
        print(export_saved_model(preset.load(), base_path, version=args.version,
                                 example_signatures=args.example_signatures,
                                 **instances))
        return 0
    if args.model is None or args.base_path is None:
        raise ValueError("Give a .keras file and a base path (`kerasmtl export MODEL "
                         "BASE`), or a preset (`kerasmtl export --preset P BASE`).")
    if not os.path.isfile(args.model):
        raise ValueError(f"No model file at '{args.model}'. Pass a .keras file.")
    import keras

    import kerasmtl
    from kerasmtl.export import export_saved_model

    kerasmtl._import_all()  # registers the model's layers and tasks with Keras
    model = keras.models.load_model(args.model)
    print(export_saved_model(model, args.base_path, version=args.version,
                             example_signatures=args.example_signatures,
                             **_instance_arguments(args)))
    return 0


_INSTANCE_KEYS = ("instance_min_score", "instance_overlap", "instance_grow")


def _instance_arguments(args, preset_settings: dict | None = None) -> dict:
    """export_saved_model's instance arguments from `kerasmtl export`'s flags,
    else a preset card's `export` settings, else export_saved_model's own
    defaults; the --instance-* flags need --instance-masks (never a silent
    no-op)."""
    import inspect

    from kerasmtl.export import export_saved_model

    given = ["--" + key.replace("_", "-") for key in _INSTANCE_KEYS
             if getattr(args, key) is not None]
    if given and not args.instance_masks:
        raise ValueError(f"{', '.join(given)} only apply with --instance-masks; add it "
                         "(a detection + segmentation model) or drop them.")
    defaults = inspect.signature(export_saved_model).parameters
    chosen = {"instance_masks": args.instance_masks}
    for key in _INSTANCE_KEYS:
        value = getattr(args, key)
        chosen[key] = (value if value is not None
                       else (preset_settings or {}).get(key, defaults[key].default))
    return chosen


def serve(*args, **kwargs):
    """`kerasmtl.serving.server.serve` (REST, and gRPC with `grpc_port`),
    imported when called (it loads TensorFlow and the web stack)."""
    from kerasmtl.serving.server import serve as serve_base_path

    return serve_base_path(*args, **kwargs)


def _serve(args) -> int:
    if args.grpc_port is not None and not 0 < args.grpc_port < 65536:
        raise ValueError(f"--grpc-port {args.grpc_port} is not a TCP port; give one "
                         "in 1..65535, e.g. 8500")
    if args.model_config_file is not None and (args.base_path or args.name):
        raise ValueError("Give either BASE_PATH --name NAME or --model-config-file "
                         "FILE, not both.")
    if args.model_config_file is None and not (args.base_path and args.name):
        raise ValueError("Give the model's BASE_PATH and --name NAME (or a "
                         "--model-config-file FILE), e.g. kerasmtl serve "
                         "exported/quickstart --name quickstart")
    # Only when given, so REST-only calls stay those of `server.serve`.
    given = {} if args.grpc_port is None else {"grpc_port": args.grpc_port}
    if args.model_config_file is not None:
        given["model_config_file"] = args.model_config_file
    if args.access_log:
        given["access_log"] = True
    if args.batching_parameters_file is not None and not args.enable_batching:
        raise ValueError(f"--batching-parameters-file {args.batching_parameters_file} "
                         "needs --enable-batching (TF Serving refuses it alone too).")
    if args.enable_batching:
        given["enable_batching"] = True
    if args.batching_parameters_file is not None:
        given["batching_parameters_file"] = args.batching_parameters_file
    serve(
        args.base_path,
        args.name,
        host=args.host,
        port=args.port,
        max_body_bytes=args.max_body_bytes,
        poll_seconds=args.poll_seconds,
        max_requests=args.max_requests,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        **given,
    )
    return 0


def _zoo_list(args) -> int:
    import zoo
    from zoo.registry import get_entry

    for name in zoo.list_models():
        print(f"{name:28s} {get_entry(name).summary}")
    return 0


def _zoo_presets(args) -> int:
    import zoo

    names = zoo.list_presets()
    if not names:
        print("No presets shipped yet.")
    for name in names:
        card = zoo.get_preset(name).card
        figures = ", ".join(
            f"{task} {f['metric']}={f['value']:.4f}"
            for task, f in card.get("headline", {}).items()) or "no dev figures"
        size = card.get("size_bytes", 0) / 1e6
        print(f"{name:28s} {card.get('zoo_model', '?'):20s} {size:5.2f} MB  "
              f"dev: {figures}  data: {card.get('data', '?')}")
    return 0


def _zoo_save_preset(args) -> int:
    import zoo

    if not os.path.isfile(args.model_file):
        raise ValueError(f"No model file '{args.model_file}': pass the .keras file "
                         "`kerasmtl train ... --save FILE` wrote.")
    directory = zoo.save_trained_preset(
        args.model, args.model_file, args.directory, args.data, seed=args.seed,
        dev_fraction=args.dev_fraction, command=args.trained_by, notes=args.notes)
    print(f"saved preset: {directory}")
    return 0


def _zoo_card(args) -> int:
    import zoo

    print(zoo.model_card(args.name))
    return 0


# -- TensorFlow's start-up logs ---------------------------------------------------

# An absl log line: severity letter, date, time, thread, file:line].
# (Before absl is initialised the time reads `00:00:<seconds since 1970>`.)
def command_parser():
    """The `kerasmtl` argument parser, each command bound to its handler."""
    return build_parser(_HANDLERS)


_HANDLERS = {
    "quickstart": _quickstart,
    "export": _export,
    "train": _train,
    "evaluate": _evaluate,
    "serve": _serve,
    "zoo list": _zoo_list,
    "zoo card": _zoo_card,
    "zoo presets": _zoo_presets,
    "zoo save-preset": _zoo_save_preset,
}


if __name__ == "__main__":
    sys.exit(main())
