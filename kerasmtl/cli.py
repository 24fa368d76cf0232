"""The `kerasmtl` command line: thin argument parsing over library functions.

    kerasmtl quickstart            train, compare with single-task models, export
    kerasmtl export MODEL BASE     export a saved .keras model as a SavedModel
    kerasmtl train NAME --data D   train a zoo model on data D, evaluate on dev, export
    kerasmtl evaluate NAME --data D  per-task dev report and Δm vs single-task models
    kerasmtl serve BASE --name N   serve a SavedModel base path over TF Serving's REST API
    kerasmtl zoo list              list the zoo's models
    kerasmtl zoo card NAME         print a zoo model's card
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import keras

from kerasmtl import weighting
from kerasmtl.export import export_saved_model
from kerasmtl.quickstart import run_quickstart
from kerasmtl.serving.server import DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT, serve

# --weighting choices of the quickstart.
_WEIGHTINGS = {
    "equal": weighting.Equal,
    "uncertainty": weighting.Uncertainty,
    "dwa": weighting.DynamicWeightAverage,
    "rlw": weighting.RandomLossWeighting,
    "gls": weighting.GeometricLossStrategy,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
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
    quick.add_argument("--epochs", type=int, default=8, help="default: %(default)s")
    quick.add_argument("--examples", type=int, default=1500,
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
    export.add_argument("model", help="path of a .keras file")
    export.add_argument("base_path", help="base path; writes BASE_PATH/<version>/")
    export.add_argument("--version", type=int, default=None,
                        help="version number (default: the next one)")
    export.set_defaults(handler=_export)

    train = commands.add_parser(
        "train", help="train a zoo model on a data set, evaluate it on dev, save "
        "and export it")
    _add_recipe_arguments(train)
    train.add_argument("--save", default=None,
                       help="write the trained model here (.keras; default: "
                       "exported/<model>.keras)")
    train.add_argument("--export-dir", default=None,
                       help="SavedModel base path (default: exported/<model>)")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate", help="train a zoo model and its single-task baselines with the "
        "same trunk, data and budget; print the per-task dev report and Δm")
    _add_recipe_arguments(evaluate)
    evaluate.add_argument("--json", default=None,
                          help="also write the numbers to this JSON file")
    evaluate.set_defaults(handler=_evaluate)

    serve_parser = commands.add_parser(
        "serve",
        help="serve the newest version under a SavedModel base path with TF "
        "Serving's REST API (picks up new versions as they appear)",
    )
    serve_parser.add_argument("base_path", help="base path holding BASE_PATH/<version>/")
    serve_parser.add_argument("--name", required=True,
                              help="model name in URLs: /v1/models/NAME")
    serve_parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                              help="default: %(default)s")
    serve_parser.add_argument("--host", default="127.0.0.1",
                              help="interface to bind (default: %(default)s, this "
                              "machine only; 0.0.0.0 for all, without authentication)")
    serve_parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                              help="larger request bodies get 413 (default: %(default)s)")
    serve_parser.add_argument("--poll-seconds", type=float, default=1.0,
                              help="seconds between scans for new versions "
                              "(default: %(default)s)")
    serve_parser.set_defaults(handler=_serve)

    zoo_parser = commands.add_parser("zoo", help="the model zoo")
    zoo_commands = zoo_parser.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    zoo_list = zoo_commands.add_parser("list", help="list the registered models")
    zoo_list.set_defaults(handler=_zoo_list)
    zoo_card = zoo_commands.add_parser("card", help="print a model's card")
    zoo_card.add_argument("name")
    zoo_card.set_defaults(handler=_zoo_card)
    return parser


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="zoo model name (see `kerasmtl zoo list`)")
    parser.add_argument("--data", required=True,
                        help="data the model's recipe understands: 'synthetic', a "
                        "folder (e.g. ../shared/data/ud_ewt_uner) or tfds:NAME")
    parser.add_argument("--epochs", type=int, default=5, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    parser.add_argument("--weighting", default=None, choices=sorted(_WEIGHTINGS),
                        help="loss weighting (default: the model's own, equal)")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")


def _recipe_options(args) -> dict:
    chosen = _WEIGHTINGS[args.weighting] if args.weighting else None
    return {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
            "weighting": chosen}


def _train(args) -> int:
    from zoo.training import train_zoo_model

    train_zoo_model(
        args.model, args.data, **_recipe_options(args),
        save_path=args.save or os.path.join("exported", f"{args.model}.keras"),
        export_dir=args.export_dir or os.path.join("exported", args.model),
    )
    return 0


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

    def build_fn(tasks):
        # Single-task baselines get plain training: a weighting of one task
        # would only rescale its learning rate.
        chosen = _WEIGHTINGS[args.weighting]() if len(tasks) > 1 else None
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
    if not os.path.isfile(args.model):
        raise ValueError(f"No model file at '{args.model}'. Pass a .keras file.")
    model = keras.models.load_model(args.model)
    print(export_saved_model(model, args.base_path, version=args.version))
    return 0


def _serve(args) -> int:
    serve(
        args.base_path,
        args.name,
        host=args.host,
        port=args.port,
        max_body_bytes=args.max_body_bytes,
        poll_seconds=args.poll_seconds,
    )
    return 0


def _zoo_list(args) -> int:
    import zoo
    from zoo.registry import get_entry

    for name in zoo.list_models():
        print(f"{name:28s} {get_entry(name).summary}")
    return 0


def _zoo_card(args) -> int:
    import zoo

    print(zoo.model_card(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
