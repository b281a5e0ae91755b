"""The `fedrp` command: one subcommand per job; --json prints one object on stdout, logs go to stderr."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fedrp.spec import MAX_LENGTH, ModelOptions, TrainOptions, Vocabulary

log = logging.getLogger("fedrp")


def _emit(args: argparse.Namespace, data: dict, human: Callable[[dict], str]) -> None:
    print(json.dumps(_finite(data), allow_nan=False) if args.json else human(data))


def _finite(value):
    """NaN and infinities as null: json.dumps would write them as bare NaN, which is not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def cmd_init(args: argparse.Namespace) -> None:
    from fedrp import artifact
    from fedrp.backbone import load_backbone
    from fedrp.files import check_writable_folder
    from fedrp.methods import build

    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder: expected the adapter file to write (.safetensors)")
    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"--out {args.out} exists: pass --overwrite to replace it, or choose another --out")
    check_writable_folder(Path(args.out).parent, "--out", "the adapter")
    model = build(_model_options(args).model_spec(len(args.labels)), load_backbone(args.model or None))
    path = artifact.save(artifact.from_model(model, task=args.task, label_names=args.labels), args.out,
                         overwrite=args.overwrite)
    _emit(args, {"artifact": str(path), "method": args.method, "params": model.num_trainable(),
                 "fingerprint": model.fingerprint}, lambda d: f"wrote {d['artifact']} ({d['params']} parameters)")


def _model_options(args: argparse.Namespace) -> ModelOptions:
    """The model's options as the command line gave them (the ones a command lacks keep their defaults)."""
    return ModelOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ModelOptions)
                           if hasattr(args, f.name)})


def describe(art) -> dict:
    """What `fedrp inspect --json` prints; other tools read these keys."""
    return {
        "method": art.method, "params": art.params, "bytes_fp32": art.params * 4, "bytes_fp16": art.params * 2,
        "fingerprint": art.fingerprint, "spec": art.spec.to_dict(), "backbone": art.backbone,
        "backbone_config_hash": art.backbone_config_hash, "pooling": art.config["pooling"], "task": art.task,
        "label_names": art.label_names, "metric": art.metric, "config": art.config,
        "tensors": {k: list(v.shape) for k, v in art.tensors.items()},
    }


def _describe_text(d: dict) -> str:
    spec = d["spec"]
    rows = [
        ("method", d["method"]), ("task", d["task"] or "-"), ("labels", ", ".join(d["label_names"]) or "-"),
        ("backbone", f"{d['backbone']} (config {d['backbone_config_hash'][:12]})"),
        ("pooling", d["pooling"]),
        ("projection", f"seed {spec['seed']}, d {spec['d']}, {spec['distribution']}, position {spec['position']}, "
                       f"{len(spec['widths'])} layers of width {sorted(set(spec['widths']))}"
                       + (f", mode {spec['mode']}" if spec.get("mode", "stored") != "stored" else "")),
        ("fingerprint", d["fingerprint"]),
        ("parameters", f"{d['params']:,}  " + ", ".join(f"{k} {v}" for k, v in d["tensors"].items())),
        ("on the wire", f"{d['bytes_fp32']:,} B in fp32, {d['bytes_fp16']:,} B in fp16"),
        ("metric", ", ".join(f"{k} {v}" for k, v in d["metric"].items()) or "-"),
    ]
    return "\n".join(f"{k:<12} {v}" for k, v in rows)


def cmd_inspect(args: argparse.Namespace) -> None:
    from fedrp import artifact

    _emit(args, describe(artifact.load(args.file)), _describe_text)


def cmd_export(args: argparse.Namespace) -> None:
    from fedrp.export import export

    out = export(args.adapter, args.out, model_name=args.model)
    _emit(args, {"out": str(out), "files": sorted(p.name for p in out.iterdir())},
          lambda d: f"exported to {d['out']}: " + ", ".join(d["files"]))


def cmd_predict(args: argparse.Namespace) -> None:
    _check_predict_options(args)
    if args.adapters is not None:
        _predict_by_task(args)
        return
    labels, definition, load = _predictor(args)  # the adapter or export checked, no backbone loaded yet
    if args.input is None:
        _predict_text(args, labels, definition, load)
    else:
        _predict_file(args, labels, definition, load)


def _predict_text(args: argparse.Namespace, labels: list[str], definition: dict | None, load: Callable) -> None:
    """--text (and --text-pair): one prediction, printed."""
    from fedrp.predict import check_pair, predict

    check_pair(definition, args.text_pair is not None, "--text-pair")
    pairs = [args.text_pair] if args.text_pair is not None else None
    result = predict(load(), labels, [args.text], pairs, max_length=args.max_length)[0]
    _emit(args, result, lambda d: f"{d['label']}  (logits {', '.join(f'{x:.4f}' for x in d['logits'])})")


def _predict_file(args: argparse.Namespace, labels: list[str], definition: dict | None, load: Callable) -> None:
    """--input: one JSON line per row, to stdout or to --output (written whole or not at all)."""
    from fedrp import predict as pr

    text, pair = pr.input_columns(definition, args.text_column, args.pair_column)
    if args.output is not None:
        pr.check_output(args.output, args.input)
    ds = pr.read_input(args.input, text, pair)  # every check before the model loads
    _write_rows(args, pr.predict_rows(load(), labels, ds, text, pair, args.batch_size, args.max_length), len(ds))


def _predict_by_task(args: argparse.Namespace) -> None:
    """--adapters DIR with --input: each row answered by the adapter its --task-column names (DIR/<task>.safetensors),
    rows of different tasks batched together (fedrp.serving.TaskBank)."""
    from fedrp import predict as pr
    from fedrp import serving

    if args.input is None:
        raise ValueError("--adapters goes with --input FILE, whose --task-column names each row's adapter")
    if args.output is not None:
        pr.check_output(args.output, args.input)
    names = pr.read_input(args.input, args.task_column, None)[args.task_column]
    files = serving.adapter_files(args.adapters, [str(n) for n in names], args.task_column)
    text, pair = pr.input_columns(serving.common_definition(files), args.text_column, args.pair_column)
    ds = pr.read_input(args.input, text, pair)  # every check before the model loads
    bank = serving.TaskBank.of(files, args.model)
    _write_rows(args, serving.predict_rows(bank, ds, args.task_column, text, pair, args.batch_size, args.max_length),
                len(ds))


def _write_rows(args: argparse.Namespace, rows, total: int) -> None:
    """Predictions as JSON lines, to stdout or to --output (written whole or not at all)."""
    from fedrp import predict as pr

    progress = not args.json and sys.stderr.isatty()
    if args.output is None:
        pr.write_jsonl(rows, sys.stdout, total, progress)
        return
    from fedrp.files import atomic_path

    with atomic_path(args.output, mode=0o644) as tmp, tmp.open("w", encoding="utf-8") as f:
        count = pr.write_jsonl(rows, f, total, progress)
    _emit(args, {"output": args.output, "rows": count}, lambda d: f"wrote {d['rows']} predictions to {d['output']}")


def _check_predict_options(args: argparse.Namespace) -> None:
    """--text takes --text-pair; --input takes the column options and --output; never the other's."""
    if args.adapters is None and args.task_column != "task":
        raise ValueError("--task-column goes with --adapters DIR")
    if args.input is None:
        given = [o for o in ("text_column", "pair_column", "output") if getattr(args, o) is not None]
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} goes with --input FILE, not --text")
    elif args.text_pair is not None:
        raise ValueError("--text-pair goes with --text; with --input, name the second text's column (--pair-column)")


def _predictor(args: argparse.Namespace) -> tuple[list[str], dict | None, Callable]:
    """(label names, the recorded task definition, a loader of the model): the adapter or export is read and
    checked here, its backbone loaded only when the loader is called."""
    from fedrp.predict import recorded_task

    if args.exported:
        from fedrp.export import check_max_length, load_exported, read_info

        check_max_length(args.exported, args.max_length)  # from its config, before the weights load
        info = read_info(Path(args.exported))
        return (info["label_names"], recorded_task(info.get("task"), info.get("task_definition")),
                lambda: load_exported(args.exported))
    from fedrp import artifact
    from fedrp.methods import check_max_length

    art = artifact.load(args.adapter)  # checked before the backbone loads
    check_max_length(args.max_length, args.model or art.backbone, art.method)
    return (art.label_names, recorded_task(art.task, art.task_definition),
            lambda: artifact.load_model(args.adapter, model_name=args.model)[0])


def _metrics_text(d: dict) -> str:
    on = "" if d.get("evaluated_on", "dev") == "dev" else f" (on {d['evaluated_on']})"
    lines = [f"{d['task']} / {d['method']}{on}: " + ", ".join(f"{k} {v:.4f}" for k, v in d["metrics"].items())]
    lines.append(f"trainable parameters {d['params']:,}; update {d['bytes_fp32']:,} B in fp32")
    if "samples_per_second" in d:
        lines.append(f"{d['train_examples']:,} training examples, {d['samples_per_second']:.1f} samples/s, "
                     f"{d['wall_seconds']:.1f} s in all")
    if d.get("artifact"):
        lines.append(f"adapter written to {d['artifact']}")
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> None:
    from fedrp.centralized import RunConfig, run

    fields = {f for f in RunConfig.__dataclass_fields__}
    cfg = RunConfig(**{k: v for k, v in vars(args).items() if k in fields}, privacy=_privacy(args))
    _check_train(args)
    _emit(args, run(cfg), _metrics_text)


def _check_train(args: argparse.Namespace) -> None:
    """What `run` would refuse only once the backbone is loaded, or the training done: refused first."""
    from fedrp import glue
    from fedrp.methods import check_frozen_head
    from fedrp.train import select_device, use_bf16

    use_bf16(args.bf16, select_device(args.device))
    check_frozen_head(args.frozen_head, glue.get_task(args.task).num_labels)
    if args.validation_samples < 0:
        raise ValueError(f"--validation-samples must be 0 (report on dev) or more, got {args.validation_samples}")
    # `run` checks the dev files first, but reads the training file only once it has the backbone's tokenizer
    if glue.get_task(args.task).data is not None or glue.data_dir(args.data_dir) is not None:
        train = glue.load_split(args.task, "train", args.data_dir)
        if args.validation_samples:
            from fedrp.data import validation_split

            validation_split(len(train), args.validation_samples)


def _privacy(args: argparse.Namespace):
    """--dp and its budget, or None; budget options without --dp are refused rather than ignored."""
    from fedrp.methods import check_private
    from fedrp.privacy.config import PrivacyConfig

    given = [o for o in ("dp_epsilon", "dp_delta", "dp_max_grad_norm", "dp_noise_multiplier")
             if getattr(args, o) is not None]
    if not args.dp:
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} needs --dp")
        return None
    if args.dp_epsilon is None:
        raise ValueError("--dp needs --dp-epsilon E (the privacy budget for the whole run)")
    check_private(args.method)
    return PrivacyConfig(epsilon=args.dp_epsilon, delta=args.dp_delta,
                         max_grad_norm=1.0 if args.dp_max_grad_norm is None else args.dp_max_grad_norm,
                         accountant=args.dp_accountant, noise_multiplier=args.dp_noise_multiplier)


def cmd_eval(args: argparse.Namespace) -> None:
    from fedrp.centralized import evaluate_artifact
    from fedrp.train import select_device

    select_device(args.device)  # evaluate_artifact asks only once the backbone is loaded
    result = evaluate_artifact(args.adapter, args.task, args.data_dir, args.max_eval_samples,
                               max_length=args.max_length, device=args.device, model_name=args.model)
    _emit(args, result, _metrics_text)


def _partition_table(d: dict) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{d['task']}: {d['scheme']} over {d['num_clients']} clients (alpha {d['alpha']}, seed {d['seed']})")
    table.add_column("client", justify="right")
    table.add_column("examples", justify="right")
    for name in d["label_names"]:
        table.add_column(name, justify="right")
    for i, (size, counts) in enumerate(zip(d["sizes"], d["label_counts"])):
        table.add_row(str(i), f"{size:,}", *(f"{c:,}" for c in counts))
    console = Console(width=120)
    with console.capture() as cap:
        console.print(table)
    return cap.get().rstrip()


def cmd_partition(args: argparse.Namespace) -> None:
    from fedrp import glue
    from fedrp.partition import check_options, label_counts, mean_label_entropy, partition, partition_labels

    if args.num_clients < 1 or args.classes_per_client < 1:
        raise ValueError(f"--num-clients and --classes-per-client must be at least 1, got {args.num_clients} and "
                         f"{args.classes_per_client}")
    check_options(args.scheme, args.alpha, args.min_size, ("--scheme", "--alpha", "--min-size"))  # before the data
    task = glue.get_task(args.task)
    labels = partition_labels(glue.load_split(task, "train", args.data_dir)["label"], task.is_regression,
                              task.score_binning)
    clients = partition(labels, args.num_clients, args.scheme, args.alpha, args.seed, args.min_size,
                        args.classes_per_client)
    names = list(task.label_names) or [f"score {i}-{i + 1}" for i in range(int(labels.max()) + 1)]
    result = {
        "task": task.name, "num_clients": args.num_clients, "scheme": args.scheme, "alpha": args.alpha,
        "seed": args.seed, "sizes": [len(c) for c in clients],
        "label_counts": label_counts(labels, clients, len(names)), "label_names": names,
        "dropped": len(labels) - sum(len(c) for c in clients),  # 0: partition() checks every example is placed
        "mean_label_entropy": round(mean_label_entropy(labels, clients), 4),  # bits; lower is more skewed
    }
    _emit(args, result, _partition_table)


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="local GLUE folder in the official layout (default: $FEDRP_GLUE_DIR, else the hub's nyu-mll/glue)")


def _add_model_options(p: argparse.ArgumentParser, skip: tuple[str, ...] = (), **choices: Sequence) -> None:
    """One option per field of fedrp.spec.ModelOptions (`choices` narrows a field's allowed values here)."""
    _add_options(p, dataclasses.fields(ModelOptions), skip, **choices)


def _add_options(p: argparse.ArgumentParser, fields: Sequence[dataclasses.Field], skip: tuple[str, ...] = (),
                 **choices: Sequence) -> dict[str, argparse.Action]:
    """One option per config field that has a help text (fedrp.spec.option), with the field's default, help and
    allowed values: the dataclass is the one source of each. Allowed values stay lazy: argparse lists plain
    choices as it adds an option, so each gets a metavar, and `fedrp --help` never imports torch."""
    actions = {}
    for f in fields:
        if f.name in skip or "help" not in f.metadata:
            continue
        flag = f"--{f.name.replace('_', '-')}"
        if f.type == "bool":
            actions[f.name] = p.add_argument(flag, action="store_true", help=f.metadata["help"])
            continue
        allowed = choices.get(f.name, f.metadata["choices"])
        extra = {"choices": allowed, "metavar": f.name.upper()} if allowed is not None else {}
        shown = ["%(choices)s"] if allowed is not None else []
        if f.default is not None:
            shown.append(f"default {f.default!r}")
        actions[f.name] = p.add_argument(flag, type=_option_type(f), default=f.default, **extra,
                                         help=f.metadata["help"] + (f" ({'; '.join(shown)})" if shown else ""))
    return actions


def _option_type(f: dataclasses.Field) -> Callable[[str], object]:
    """argparse's type for a field: its annotation's first type, positive where the field says so."""
    base = f.type.split("|")[0].strip()
    if base == "int":
        return _positive_int if f.metadata["minimum"] == 1 else int
    if base == "float":
        return _positive_float if f.metadata.get("positive") else float
    return str


class _Renamed(argparse.Action):
    """An option under its new name (the first) that still takes its old one, with a warning when it is used."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if option_string != self.option_strings[0]:
            print(f"{parser.prog}: {option_string} is now {self.option_strings[0]}; the old name will go",
                  file=sys.stderr)
        setattr(namespace, self.dest, values)


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text!r}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """Bad input is one line on stderr and exit status 2, without the usage block above it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def cmd_task(args: argparse.Namespace) -> None:
    from fedrp.files import write_text
    from fedrp.tasks import draft_task

    out = Path(args.out) if args.out else Path(args.data_file).with_suffix(".toml")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {out} exists: pass --overwrite to replace it, or choose another --out")
    if out.resolve().parent != Path(args.data_file).resolve().parent:
        raise ValueError(f"--out {out} must sit beside {args.data_file}: a definition names its files relative to "
                         "its own folder")
    write_text(out, draft_task(args.data_file, args.name))
    _emit(args, {"task": str(out)}, lambda d: f"wrote {d['task']}: check its columns and labels, then "
                                              f"`fedrp train --task {d['task']}`")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fedrp", description="Federated finetuning of one small vector per task.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.set_defaults(func=func)
        return p

    p = command("init", cmd_init, "Write a fresh, untrained adapter for a backbone.")
    _add_model_options(p, skip=("lora_rank",), method=Vocabulary("fedrp.adapters", "adapter_methods", lambda f: f()))
    p.add_argument("--labels", nargs="+", default=["0", "1"], help="label names, one per class (one for regression)")
    p.add_argument("--task", default=None)
    p.add_argument("--out", required=True, help="adapter file to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace the file if it exists")

    p = command("inspect", cmd_inspect, "Show an adapter's size on the wire, projection spec and metadata.")
    p.add_argument("file", help="adapter .safetensors file")

    p = command("export", cmd_export, "Write a plain transformers folder plus head (SLaSh folded into biases).")
    p.add_argument("--adapter", required=True, help="adapter .safetensors file")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--model", default=None, help="load the backbone from here instead of the name in the adapter")

    p = command("predict", cmd_predict, "Label, scores and logits for one text (or text pair), or for every row of a "
                                        "file (JSON Lines out).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--adapter", help="adapter .safetensors file")
    src.add_argument("--exported", help="folder written by `fedrp export`")
    src.add_argument("--adapters", help="with --input: a folder of adapters, <task>.safetensors; each row is answered "
                                        "by the one its --task-column names, rows of different tasks batched together")
    p.add_argument("--model", default=None, help="with --adapter or --adapters: backbone to load instead of the one "
                                                 "they name")
    p.add_argument("--task-column", default="task", help="with --adapters: the column naming each row's task")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="one text to label")
    what.add_argument("--input", help="a CSV, TSV, JSON Lines or Parquet file: one prediction per row")
    p.add_argument("--text-pair", default=None, help="with --text: the second text, for a pair task")
    p.add_argument("--text-column", default=None, help="with --input: the text column (default: the adapter's task's)")
    p.add_argument("--pair-column", default=None,
                   help="with --input: the second text's column (default: the adapter's task's, for a pair task)")
    p.add_argument("--output", default=None,
                   help="with --input: the JSON Lines file to write, whole or not at all (default: stdout)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="with --input: rows per forward pass")
    p.add_argument("--max-length", type=int, default=MAX_LENGTH)

    p = command("train", cmd_train, "Train one method on one GLUE task (centralized) and report dev metrics.")
    p.add_argument("--task", required=True, help="cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte or wnli, or a task "
                                                 "file of your own (.toml, `fedrp task init`)")
    _add_model_options(p)
    model = {f.name for f in dataclasses.fields(ModelOptions)}
    actions = _add_options(p, [f for f in dataclasses.fields(TrainOptions) if f.name not in model])
    actions["lr"].rates = Vocabulary("fedrp.methods", "RATES",
                                     lambda rates: [f"{k} {r.centralized:g}" for k, r in rates.items()])
    dp = p.add_argument_group("differential privacy (sample-level DP-SGD)")
    dp.add_argument("--dp", action="store_true", help="train with DP-SGD: Poisson batches, per-sample clipping, noise")
    # Named as the run config names them (dp-epsilon, ...), so a setting has one name; the old spellings
    # still work, with a warning.
    dp.add_argument("--dp-epsilon", "--epsilon", type=_positive_float, default=None, action=_Renamed,
                    help="privacy budget of the whole run")
    dp.add_argument("--dp-delta", "--delta", type=float, default=None, action=_Renamed,
                    help="default 1/(2n) for n training examples")
    dp.add_argument("--dp-max-grad-norm", "--max-grad-norm", type=_positive_float, default=None, action=_Renamed,
                    help="per-sample clipping norm (default 1.0)")
    dp.add_argument("--dp-accountant", "--accountant", choices=["rdp", "prv"], default="rdp", action=_Renamed)
    dp.add_argument("--dp-noise-multiplier", "--noise-multiplier", type=_positive_float, default=None,
                    action=_Renamed, help="fix the noise instead of calibrating it")

    p = command("eval", cmd_eval, "Dev metrics of a saved adapter.")
    p.add_argument("--adapter", required=True)
    p.add_argument("--task", default=None,
                   help="a GLUE task, or a task file (.toml) whose validation data to score; its labels must be the "
                        "adapter's (default: the GLUE task the adapter was trained on; a task of your own needs its file)")
    _data_options(p)
    p.add_argument("--model", default=None, help="backbone to load instead of the one the adapter names")
    p.add_argument("--max-eval-samples", type=_positive_int, default=None)
    p.add_argument("--max-length", type=int, default=MAX_LENGTH)
    p.add_argument("--device", default="auto")

    p = command("partition", cmd_partition, "Show how a task's training set splits over federated clients.")
    p.add_argument("--task", required=True)
    p.add_argument("--num-clients", type=int, required=True)
    p.add_argument("--scheme", choices=Vocabulary("fedrp.partition", "SCHEMES"), default="dirichlet", metavar="SCHEME",
                   help="%(choices)s (default %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (dirichlet, quantity)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-size", type=int, default=1, help="smallest partition allowed")
    p.add_argument("--classes-per-client", type=int, default=1, help="pathological: classes each client holds")
    _data_options(p)

    p = command("task", cmd_task, "Your own task: `fedrp task init DATAFILE` drafts its TOML definition from a data "
                                  "file (docs/guide/your-task.md).")
    p.add_argument("action", choices=["init"], help="init: draft a definition to check and edit")
    p.add_argument("data_file", metavar="DATAFILE", help="a CSV, TSV, JSON Lines or Parquet file of examples")
    p.add_argument("--name", default=None, help="the task's name (default: the file's stem)")
    p.add_argument("--out", default=None, help="the TOML file to write (default: DATAFILE with .toml)")
    p.add_argument("--overwrite", action="store_true", help="replace the TOML file if it exists")

    # Commands other packages register (the dashboard lives in server/, which fedrp/ must not import).
    for entry in importlib.metadata.entry_points(group="fedrp.commands"):
        entry.load()(command)
    return parser


def _quiet_libraries(verbose: bool) -> None:
    import transformers

    transformers.utils.logging.set_verbosity_info() if verbose else transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if not verbose:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()


def _hub_hint(args: argparse.Namespace) -> str:
    """What to do when GLUE was to come from the hub (no --data-dir, no $FEDRP_GLUE_DIR) and the hub failed."""
    from fedrp import glue

    if not hasattr(args, "data_dir") or glue.data_dir(args.data_dir) is not None:
        return ""
    return (f"; without --data-dir or ${glue.GLUE_DIR_ENV}, GLUE comes from the hub: pass --data-dir DIR or set "
            f"${glue.GLUE_DIR_ENV} to a local GLUE folder in the official layout")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries(args.verbose)
    try:
        if getattr(args, "max_length", 8) < 8:
            raise ValueError(f"--max-length must be at least 8 tokens, got {args.max_length}")
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as err:
        print(f"fedrp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (ConnectionError, OSError) as err:  # the hub's GLUE without a network (requests' errors are OSErrors)
        print(f"fedrp {args.command}: error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
              f"{_hub_hint(args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback; files are written whole or not at all
        print(f"fedrp {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
