"""The `kerasmtl` command line's arguments: parser, argument types and the
defaults `--help` shows, with no TensorFlow import (`cli.py` runs the
commands)."""

from __future__ import annotations

import argparse

from kerasmtl import weighting_spec

# --weighting names: every weighting and gradient balancer `kerasmtl.weighting`
# registers, read from its source (importing the classes loads TensorFlow).
# quickstart's choices are those that need no argument.
WEIGHTINGS = weighting_spec.spellings(bare_only=True)

# --optimizer choices: Keras optimizer names (`keras.optimizers.get`).
OPTIMIZERS = ["adafactor", "adagrad", "adam", "adamax", "adamw", "lion", "nadam",
               "rmsprop", "sgd"]

# `kerasmtl.serving.server`'s defaults, repeated so that `--help` does not
# import the server (a test checks they agree).
DEFAULT_PORT = 8501
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_REQUESTS = 64
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_TIMEOUTS = {"header": 10.0, "body": 60.0, "keep_alive": 5.0}

# What `--data` means for each zoo model with a training recipe (a test checks
# that every such model is listed). Kept here, not read from the zoo, so that
# `--help` does not import TensorFlow.
DATA_HELP = """\
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


def build_parser(handlers: dict | None = None) -> argparse.ArgumentParser:
    """The `kerasmtl` argument parser; each command's `handler` default is
    `handlers[<command>]` (`"zoo list"` for a zoo command), else None."""
    handlers = handlers or {}
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
                       choices=sorted(WEIGHTINGS), help="default: %(default)s")
    quick.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    quick.set_defaults(handler=handlers.get("quickstart"))

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
    export.add_argument("--instance-masks", action="store_true",
                        help="also serve `instance_ids` (a detection + segmentation "
                        "model: each box cut out of the foreground)")
    # The --instance-* defaults (None here) are a --preset's card's `export`
    # settings, else export_saved_model's: 0, score, 0.
    export.add_argument("--instance-min-score", type=float, default=None, metavar="S",
                        help="with --instance-masks, detections scoring less make no "
                        "instance (default: a --preset's setting, else 0)")
    export.add_argument("--instance-overlap", choices=("score", "centre"), default=None,
                        help="with --instance-masks, a pixel in several boxes goes to "
                        "the best score or the nearest centre (default: a --preset's "
                        "setting, else score)")
    export.add_argument("--instance-grow", type=float, default=None, metavar="G",
                        help="with --instance-masks, grow each box by G times its size "
                        "on each side (default: a --preset's setting, else 0)")
    export.add_argument("--version", type=int, default=None,
                        help="version number (default: the next one)")
    export.set_defaults(handler=handlers.get("export"))

    train = commands.add_parser(
        "train", help="train a zoo model on a data set, evaluate it on dev, save "
        "and export it", epilog=DATA_HELP,
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
    train.set_defaults(handler=handlers.get("train"))

    evaluate = commands.add_parser(
        "evaluate", help="train a zoo model and its single-task baselines with the "
        "same trunk, data and budget; print the per-task dev report and Δm",
        epilog=DATA_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_recipe_arguments(evaluate)
    evaluate.add_argument("--json", default=None,
                          help="also write the numbers to this JSON file")
    evaluate.set_defaults(handler=handlers.get("evaluate"))

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
    serve_parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                              help="default: %(default)s")
    serve_parser.add_argument("--grpc-port", type=int, default=None,
                              help="also serve TF Serving's gRPC API (PredictionService, "
                              "ModelService) on this port, e.g. 8500 (default: REST only)")
    serve_parser.add_argument("--host", default="127.0.0.1",
                              help="interface to bind (default: %(default)s, this "
                              "machine only; 0.0.0.0 for all, without authentication)")
    serve_parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                              help="larger request bodies get 413 (default: %(default)s)")
    serve_parser.add_argument("--poll-seconds", type=float, default=1.0,
                              help="seconds between scans for new versions "
                              "(default: %(default)s)")
    serve_parser.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS,
                              help="predict requests worked on at once; more get 503 "
                              "(default: %(default)s)")
    serve_parser.add_argument("--max-connections", type=int,
                              default=DEFAULT_MAX_CONNECTIONS,
                              help="open connections; past it the one waiting longest "
                              "for its request is closed (default: %(default)s)")
    for part, what in (("header", "seconds a client may take to send a request's headers"),
                       ("body", "seconds a client may take to send a request's body"),
                       ("keep_alive", "seconds an idle connection stays open")):
        serve_parser.add_argument(f"--{part.replace('_', '-')}-timeout", type=float,
                                  default=DEFAULT_TIMEOUTS[part],
                                  help=f"{what} (default: %(default)s)")
    serve_parser.set_defaults(handler=handlers.get("serve"))

    zoo_parser = commands.add_parser("zoo", help="the model zoo")
    zoo_commands = zoo_parser.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    zoo_list = zoo_commands.add_parser("list", help="list the registered models")
    zoo_list.set_defaults(handler=handlers.get("zoo list"))
    zoo_card = zoo_commands.add_parser("card", help="print a model's card")
    zoo_card.add_argument("name")
    zoo_card.set_defaults(handler=handlers.get("zoo card"))
    zoo_presets = zoo_commands.add_parser(
        "presets", help="list the trained presets shipped with the zoo")
    zoo_presets.set_defaults(handler=handlers.get("zoo presets"))
    zoo_save = zoo_commands.add_parser(
        "save-preset", help="write a trained .keras file as a preset directory",
        description="Writes MODEL_FILE (a zoo model trained with `kerasmtl train "
        "... --save`) as the preset DIR: model.keras without optimizer state and "
        "preset.json with the dev figures on the data's dev split (drawn as "
        "`kerasmtl train` draws it, with the same --seed and --dev-fraction), "
        "COMMAND and an example. A preset already in DIR is replaced and its "
        "figures go to the card's history, compared task by task.")
    zoo_save.add_argument("model", help="zoo model name the file was trained as")
    zoo_save.add_argument("model_file", help="the trained model (.keras)")
    zoo_save.add_argument("directory", metavar="DIR", help="the preset directory")
    zoo_save.add_argument("--data", required=True, metavar="SPEC",
                          help="the data it was trained on, as given to `kerasmtl train`")
    zoo_save.add_argument("--command", required=True, dest="trained_by", metavar="COMMAND",
                          help="the exact command that trained MODEL_FILE (for the card)")
    zoo_save.add_argument("--seed", type=int, default=0,
                          help="the training run's --seed (default: %(default)s)")
    zoo_save.add_argument("--dev-fraction", type=_fraction, default=None, metavar="F",
                          help="the training run's --dev-fraction (default: the recipe's)")
    zoo_save.add_argument("--notes", default=None, help="a line for the card")
    zoo_save.set_defaults(handler=handlers.get("zoo save-preset"))
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
    parser.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
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


def _int_at_least(minimum: int):
    """An argparse type: an int >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an int >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {value}")
        return value

    return parse


# Zero or negative epochs or batch sizes used to export an untrained model.
_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


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
