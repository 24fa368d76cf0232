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

import argparse
import contextlib
import os
import re
import sys
import threading
from collections.abc import Sequence

from kerasmtl import weighting_spec

# --weighting names: every weighting and gradient balancer `kerasmtl.weighting`
# registers, read from its source (importing the classes loads TensorFlow).
# quickstart's choices are those that need no argument.
_WEIGHTINGS = weighting_spec.spellings(bare_only=True)

# --optimizer choices: Keras optimizer names (`keras.optimizers.get`).
_OPTIMIZERS = ["adafactor", "adagrad", "adam", "adamax", "adamw", "lion", "nadam",
               "rmsprop", "sgd"]

# `kerasmtl.serving.server`'s defaults, repeated so that `--help` does not
# import the server (a test checks they agree).
_DEFAULT_PORT = 8501
_DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
_DEFAULT_MAX_REQUESTS = 64
_DEFAULT_MAX_CONNECTIONS = 1000
_DEFAULT_TIMEOUTS = {"header": 10.0, "body": 60.0, "keep_alive": 5.0}

# What `--data` means for each zoo model with a training recipe (a test checks
# that every such model is listed). Kept here, not read from the zoo, so that
# `--help` does not import TensorFlow.
_DATA_HELP = """\
--data SPEC, per zoo model (see also `kerasmtl zoo card NAME`):
  tabular_mtl_mlp       synthetic
  multilabel_mlp        synthetic, or a MULAN folder (e.g. ../shared/data/yeast):
                        one <name>-train.arff (or one .arff) and one <name>.xml
                        label file; an optional dev_split_seed0.txt lists the
                        dev rows (0-based, one per line), else --dev-fraction of
                        the rows (default 0.1), drawn with --seed, are the dev set
  multilabel_cnn        synthetic, or a folder with train.csv and dev.csv
                        (columns: image, then one 0/1 column per label; image
                        paths relative to the folder)
  pos_ner_bilstm_crf,   synthetic; tfds:conll2003 (prepared beforehand with
  pos_ner_transformer   `tfds build conll2003`); or a UD English-EWT + UNER
                        folder holding joined/en_ewt-{train,dev}.pos_ner.tsv
                        (e.g. ../shared/data/ud_ewt_uner)
  det_seg_resnet_fpn    shapes (synthetic); a COCO folder (annotations.json +
                        images/, or annotations/instances_<split>.json + the
                        images); or a DSB-2018 nuclei folder (<id>/images/<id>.png
                        and <id>/masks/*.png per image); --dev-fraction of the
                        images (default 0.2), drawn with --seed, are the dev set

TensorFlow's C++ start-up and device logs are hidden unless TF_CPP_MIN_LOG_LEVEL
is set (TF_CPP_MIN_LOG_LEVEL=0 shows them all).
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    _start_tensorflow_quietly()
    try:
        return args.handler(args) or 0
    except ValueError as error:  # bad input: a clear message, not a traceback
        print(f"kerasmtl {args.command}: error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerasmtl",
        description="Multi-task and multi-label learning for Keras 3.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    quick = commands.add_parser(
        "quickstart",
        help="train a multi-task model on built-in synthetic data, compare it "
        "with single-task models and export it",
    )
    quick.add_argument("--export-dir", default="exported/quickstart",
                       help="base path of the SavedModel export (default: %(default)s)")
    quick.add_argument("--epochs", type=_positive_int, default=8, metavar="N",
                       help="default: %(default)s")
    quick.add_argument("--examples", type=_positive_int, default=1500, metavar="N",
                       help="training examples (default: %(default)s)")
    quick.add_argument("--missing-rate", type=float, default=0.3,
                       help="share of labels marked missing (default: %(default)s)")
    quick.add_argument("--weighting", default="uncertainty",
                       choices=sorted(_WEIGHTINGS), help="default: %(default)s")
    quick.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    quick.set_defaults(handler=_quickstart)

    export = commands.add_parser(
        "export", help="export a saved .keras MultiTaskModel as a TF Serving SavedModel"
    )
    export.add_argument("model", nargs="?", default=None,
                        help="path of a .keras file (or give --preset)")
    export.add_argument("base_path", nargs="?", default=None,
                        help="base path; writes BASE_PATH/<version>/")
    export.add_argument("--preset", default=None, metavar="P",
                        help="export this preset (name, path or URL) instead of a "
                        ".keras file: `kerasmtl export --preset P BASE`")
    export.add_argument("--example-signatures", action="store_true",
                        help="also add TF Serving Classify/Regress signatures "
                        "(classify_<task>, regress_<task>: tf.Example in) for "
                        ":classify and :regress")
    export.add_argument("--version", type=int, default=None,
                        help="version number (default: the next one)")
    export.set_defaults(handler=_export)

    train = commands.add_parser(
        "train", help="train a zoo model on a data set, evaluate it on dev, save "
        "and export it", epilog=_DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_recipe_arguments(train)
    train.add_argument("--save", default=None,
                       help="write the trained model here (.keras; default: "
                       "exported/<model>.keras)")
    train.add_argument("--export-dir", default=None,
                       help="SavedModel base path (default: exported/<model>)")
    train.add_argument("--preset", default=None, metavar="P",
                       help="fine-tune from this preset (a name from `kerasmtl zoo "
                       "presets`, a path, or an http(s)/file URL, optionally ending "
                       "in #sha256=HEX): layers whose name and weight shapes match "
                       "start from it, heads of new label or tag sets are rebuilt")
    train.add_argument("--save-preset", default=None, metavar="DIR",
                       help="also write the trained model as a preset directory "
                       "(model.keras + preset.json with this command and the dev "
                       "figures)")
    train.add_argument("--early-stopping", type=_non_negative_int, default=None,
                       metavar="PATIENCE",
                       help="stop when the monitored dev value (--monitor) has not "
                       "improved for PATIENCE epochs, and keep the weights of its best "
                       "epoch; 0 turns it off (default: the model's recipe's, else off)")
    train.add_argument("--monitor", default=None, metavar="KEY",
                       help="what --early-stopping and the best checkpoint watch: "
                       "val_loss (all tasks' weighted losses on the dev split), joint "
                       "(the mean of the tasks' primary dev metrics, e.g. UPOS "
                       "accuracy and NER entity F1) or any value the log shows, e.g. "
                       "val_ner/entity_f1 (default: the model's recipe's, else val_loss)")
    train.add_argument("--tensorboard", default=None, metavar="DIR",
                       help="write TensorBoard logs here: per-task losses, weights "
                       "and metrics on train and dev, and the learning rate, per epoch")
    train.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                       help="back up the run after each epoch (DIR/backup: weights, "
                       "optimizer, epoch) and keep the model with the best monitored "
                       "dev value (--monitor) in DIR/best.keras")
    train.add_argument("--resume", action="store_true",
                       help="continue the run backed up in --checkpoint-dir (same "
                       "model, data and settings) from its last finished epoch")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate", help="train a zoo model and its single-task baselines with the "
        "same trunk, data and budget; print the per-task dev report and Δm",
        epilog=_DATA_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_recipe_arguments(evaluate)
    evaluate.add_argument("--json", default=None,
                          help="also write the numbers to this JSON file")
    evaluate.set_defaults(handler=_evaluate)

    serve_parser = commands.add_parser(
        "serve",
        help="serve the newest version under a SavedModel base path with TF "
        "Serving's REST API (picks up new versions as they appear)",
    )
    serve_parser.add_argument("base_path", nargs="?", default=None,
                              help="base path holding BASE_PATH/<version>/ (not with "
                              "--model-config-file)")
    serve_parser.add_argument("--name", default=None,
                              help="model name in URLs: /v1/models/NAME (required "
                              "with BASE_PATH)")
    serve_parser.add_argument("--model-config-file", default=None,
                              help="TF Serving model_config_list text file: several "
                              "models, version policies and labels (re-read when it "
                              "changes), instead of BASE_PATH and --name")
    serve_parser.add_argument("--enable-batching", action="store_true",
                              help="merge concurrent predict requests (REST and gRPC) "
                              "into one call of the model, as TF Serving's "
                              "--enable_batching (default: off)")
    serve_parser.add_argument("--batching-parameters-file", default=None,
                              help="TF Serving batching parameters text file, e.g. "
                              "max_batch_size { value: 32 } (with --enable-batching; "
                              "default: TF Serving's: 1000 rows, timeout 0, 10 "
                              "batches queued, one thread per CPU)")
    serve_parser.add_argument("--access-log", action="store_true",
                              help="log one JSON line per request to stderr "
                              "(default: off, as TF Serving)")
    serve_parser.add_argument("--port", type=int, default=_DEFAULT_PORT,
                              help="default: %(default)s")
    serve_parser.add_argument("--grpc-port", type=int, default=None,
                              help="also serve TF Serving's gRPC API (PredictionService, "
                              "ModelService) on this port, e.g. 8500 (default: REST only)")
    serve_parser.add_argument("--host", default="127.0.0.1",
                              help="interface to bind (default: %(default)s, this "
                              "machine only; 0.0.0.0 for all, without authentication)")
    serve_parser.add_argument("--max-body-bytes", type=int, default=_DEFAULT_MAX_BODY_BYTES,
                              help="larger request bodies get 413 (default: %(default)s)")
    serve_parser.add_argument("--poll-seconds", type=float, default=1.0,
                              help="seconds between scans for new versions "
                              "(default: %(default)s)")
    serve_parser.add_argument("--max-requests", type=int, default=_DEFAULT_MAX_REQUESTS,
                              help="predict requests worked on at once; more get 503 "
                              "(default: %(default)s)")
    serve_parser.add_argument("--max-connections", type=int,
                              default=_DEFAULT_MAX_CONNECTIONS,
                              help="open connections; past it the one waiting longest "
                              "for its request is closed (default: %(default)s)")
    for part, what in (("header", "seconds a client may take to send a request's headers"),
                       ("body", "seconds a client may take to send a request's body"),
                       ("keep_alive", "seconds an idle connection stays open")):
        serve_parser.add_argument(f"--{part.replace('_', '-')}-timeout", type=float,
                                  default=_DEFAULT_TIMEOUTS[part],
                                  help=f"{what} (default: %(default)s)")
    serve_parser.set_defaults(handler=_serve)

    zoo_parser = commands.add_parser("zoo", help="the model zoo")
    zoo_commands = zoo_parser.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    zoo_list = zoo_commands.add_parser("list", help="list the registered models")
    zoo_list.set_defaults(handler=_zoo_list)
    zoo_card = zoo_commands.add_parser("card", help="print a model's card")
    zoo_card.add_argument("name")
    zoo_card.set_defaults(handler=_zoo_card)
    zoo_presets = zoo_commands.add_parser(
        "presets", help="list the trained presets shipped with the zoo")
    zoo_presets.set_defaults(handler=_zoo_presets)
    return parser


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="zoo model name (see `kerasmtl zoo list`)")
    parser.add_argument("--data", required=True, metavar="SPEC",
                        help="the data: 'synthetic' (or 'shapes'), a folder, or "
                        "tfds:NAME; what each model reads is listed below")
    parser.add_argument("--epochs", type=_positive_int, default=None, metavar="N",
                        help="default: the model's recipe's, else 5")
    parser.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                        help="default: the model's recipe's, else 32")
    parser.add_argument("--optimizer", default=None, choices=_OPTIMIZERS,
                        help="a Keras optimizer with its default learning rate "
                        "(default: the model's recipe's, else adam)")
    parser.add_argument("--dev-fraction", type=_fraction, default=None, metavar="F",
                        help="share of the rows or images held out for dev when the "
                        "data has no dev split of its own (default: the model's "
                        "recipe's, see below)")
    parser.add_argument("--weighting", default=None, type=_weighting_spec,
                        metavar="NAME[:key=value,...]",
                        help="loss weighting or gradient balancer, with its "
                        "constructor arguments (e.g. pcgrad, dwa:temperature=2, "
                        "famo:learning_rate=0.025; values are Python literals). "
                        "Names are case-insensitive, CamelCase or snake_case: "
                        f"{weighting_spec.describe_names()} (default: the model's "
                        "own, Equal)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the dev split, the shuffle and the weights "
                        "(default: %(default)s)")


def _positive_int(text: str) -> int:
    # Zero or negative epochs or batch sizes used to export an untrained model.
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _weighting_spec(text: str) -> str:
    # The name and syntax are checked here, before TensorFlow loads; the
    # arguments when the classes are imported (`_weighting_factory`).
    try:
        weighting_spec.parse_weighting_spec(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


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

        model = zoo.load_preset(args.preset)
        print(export_saved_model(model, base_path, version=args.version,
                                 example_signatures=args.example_signatures))
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
                             example_signatures=args.example_signatures))
    return 0


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


def _zoo_card(args) -> int:
    import zoo

    print(zoo.model_card(args.name))
    return 0


# -- TensorFlow's start-up logs ---------------------------------------------------

# An absl log line: severity letter, date, time, thread, file:line].
# (Before absl is initialised the time reads `00:00:<seconds since 1970>`.)
_ABSL_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITIES = b"IWEF"


def _start_tensorflow_quietly() -> None:
    """Imports TensorFlow (and Keras) with its C++ log level applied.

    Unless the user set `TF_CPP_MIN_LOG_LEVEL`, the command line sets it to 3:
    on a machine without a GPU TensorFlow logs a dozen INFO and ERROR lines
    (no CUDA driver, oneDNN notes) that say nothing about the run. TensorFlow
    applies the level to its own logs, but not to the lines absl writes while
    the shared libraries load (`port.cc`, `cudart_stub.cc`: they come before
    absl is initialised), so the import runs with stderr passing through a
    filter that applies the same level to those.
    """
    if "tensorflow" in sys.modules:
        return  # already imported (a test, an embedding program): not ours to change
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        level = int(level)
    except ValueError:
        level = 0
    with _drop_absl_lines_below(level):
        import keras  # noqa: F401  (imports TensorFlow)


@contextlib.contextmanager
def _drop_absl_lines_below(level: int):
    """Copies file descriptor 2 (C++ writes there, not to `sys.stderr`) to
    the real stderr, less absl log lines of a severity (I=0, W=1, E=2) below
    `level`; fatal lines always pass."""
    if level <= 0:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (e.g. pythonw): nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                match = _ABSL_LINE.match(line)
                severity = _SEVERITIES.index(match.group(1)) if match else None
                if line.startswith(_ABSL_PREAMBLE) or (
                        severity is not None and severity < min(level, 3)):
                    continue
                os.write(saved, line)

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees EOF
        thread.join()
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main())
