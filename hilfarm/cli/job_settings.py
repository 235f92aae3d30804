"""How the run-setting options of `submit` and `demo` become JobSettings: sizes, input shapes,
runtime and measurement options."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import click

from hilfarm.client import Upload
from hilfarm.contract import RUNTIMES
from hilfarm.units import parse_bytes
from hilfarm.v1 import farm_pb2


def parse_size(text: str) -> int:
    """'512MiB', '2GB', '1048576' -> bytes, for an option."""
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_input_shape(text: str) -> farm_pb2.InputShape:
    """'input=1,3,224,224' -> InputShape."""
    name, sep, dims = text.rpartition("=")
    try:
        values = [int(d) for d in dims.split(",")] if sep and dims else None
    except ValueError:
        values = None
    if not name or values is None or any(v <= 0 for v in values):
        raise click.BadParameter(f"{text!r}: expected [MODEL:]NAME=D1,D2,... with positive sizes, "
                                 "e.g. input=1,3,224,224 or det.onnx:images=1,3,640,640",
                                 param_hint="--input-shape")
    return farm_pb2.InputShape(name=name, dims=values)


def _model_keys(path: Path) -> Tuple[str, ...]:
    return tuple(dict.fromkeys((str(path), path.name, path.stem)))


def input_shapes_by_model(texts: Sequence[str], models: Sequence[Path]) -> Dict[Optional[int], List[farm_pb2.InputShape]]:
    """``--input-shape`` values -> model index (None: every model) -> shapes.

    ``MODEL:NAME=D1,...`` sizes an input of one model (MODEL: its path as given, file name or
    stem; ``*`` for every model). ``NAME=D1,...`` is accepted when it cannot be misread: with
    one model. An input name may itself hold ':' (``input:0``): the text before the first ':'
    is a model only when it names one.
    """
    out: Dict[Optional[int], List[farm_pb2.InputShape]] = {}
    for text in texts:
        prefix, colon, rest = text.partition(":")
        target: Optional[int] = None
        if colon and prefix == "*":
            text = rest
        elif colon and "=" in rest:
            matches = [i for i, m in enumerate(models) if prefix in _model_keys(m)]
            if len(matches) > 1:
                raise click.BadParameter(f"{text!r}: {prefix!r} names {len(matches)} of the models "
                                         f"({', '.join(str(models[i]) for i in matches)}); write its path",
                                         param_hint="--input-shape")
            if matches:
                target, text = matches[0], rest
            elif Path(prefix).suffix.lower() in (".onnx", ".tflite"):
                raise click.BadParameter(f"{text!r}: {prefix!r} is not one of the submitted models "
                                         f"({', '.join(m.name for m in models)})", param_hint="--input-shape")
        shape = parse_input_shape(text)
        if target is None and len(models) > 1 and not (colon and prefix == "*"):
            example = f"{models[0].name}:{shape.name}={','.join(map(str, shape.dims))}"
            raise click.BadParameter(
                f"{text!r} does not say which model it is for, and {len(models)} models are submitted "
                f"({', '.join(m.name for m in models)}): write MODEL:NAME=D1,... (e.g. {example}), "
                f"or *:NAME=D1,... for every model", param_hint="--input-shape")
        out.setdefault(target, []).append(shape)
    return out


def settings_options(func):
    options = [
        click.option("--runs", "min_runs", type=click.IntRange(min=1), help="Minimum timed runs [50]."),
        click.option("--min-seconds", type=click.FloatRange(min=0), help="Minimum timed duration [1 s]."),
        click.option("--max-runs", type=click.IntRange(min=1), help="Cap on timed runs [100000]."),
        click.option("--max-seconds", type=click.FloatRange(min=0), help="Cap on timed duration [150 s]."),
        click.option("--warmup", "warmup_runs", type=click.IntRange(min=0), help="Minimum warmup runs [1]."),
        click.option("--warmup-seconds", type=click.FloatRange(min=0), help="Minimum warmup time [0.5 s]."),
        click.option("--warmup-max-seconds", type=click.FloatRange(min=0, min_open=True),
                     help="Warmup goes on until latency stops trending, at most this long [30 s]."),
        click.option("--repeats", type=click.IntRange(min=1, max=100),
                     help="Fresh processes to measure in, each with its own load, warmup and timed runs "
                          "[profile default, 1; regress: 5]. Comparisons take the repeat as their unit."),
        click.option("--threads", type=click.IntRange(min=0), help="Runtime threads (0: runtime default)."),
        click.option("--runtime", type=click.Choice(list(RUNTIMES)),
                     help="Runtime (default: from the model format)."),
        click.option("--provider", "execution_provider",
                     help="ONNX Runtime execution provider, e.g. CUDAExecutionProvider."),
        click.option("--graph-opt", "graph_optimization",
                     type=click.Choice(["disable", "basic", "extended", "all"]),
                     help="ONNX Runtime graph optimisation level."),
        click.option("--no-xnnpack", "tflite_disable_xnnpack", is_flag=True, default=None,
                     help="TFLite: run without the default XNNPACK delegate."),
        click.option("--delegate", "tflite_delegate_path", help="TFLite: external delegate library."),
        click.option("--delegate-option", "delegate_options", multiple=True, metavar="KEY=VALUE",
                     help="TFLite: option for the external delegate (repeatable)."),
        click.option("--input-shape", "input_shapes", multiple=True, metavar="[MODEL:]NAME=D1,D2,...",
                     help="Shape of a model input with dynamic dimensions (repeatable). MODEL (file name, stem "
                          "or path; * for all) says which model; it may be left out with one model."),
        click.option("--dynamic-default", "dynamic_dimension_default", type=click.IntRange(min=1), metavar="N",
                     help="Size of every dynamic dimension no --input-shape sets (without it such a dimension "
                          "fails the job, naming it)."),
        click.option("--inputs", "inputs_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Input tensors as .npz, keyed by input name (default: random)."),
        click.option("--seed", type=int, help="Seed of the random inputs [0]."),
        click.option("--memory-limit", help="Memory limit of the benchmark process, e.g. 2GiB."),
        click.option("--timeout", "timeout_seconds", type=click.FloatRange(min=0),
                     help="Wall-clock limit of the benchmark process in seconds."),
        click.option("--sustained", "sustained_seconds", type=click.FloatRange(min=0, min_open=True),
                     metavar="SECONDS",
                     help="Sustained mode: run the timed phase for SECONDS of wall time (run counts do not "
                          "apply; --timeout then covers the rest of the job) and report latency, power and "
                          "temperature per window, to expose thermal throttling."),
        click.option("--profile-ops", "profile_ops", is_flag=True, default=None,
                     help="After the timed runs, profile every node/operator (time, and the provider or "
                          "delegate that ran it); the full trace is kept with the result."),
        click.option("--profile-ops-runs", "profile_ops_runs", type=click.IntRange(min=1, max=1000),
                     help="Inferences the per-operator profile averages over [10]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_settings(options: Dict[str, object]) -> Tuple[farm_pb2.JobSettings, Optional[Path]]:
    """JobSettings from the command's options but the input shapes (``add_input_shapes`` adds
    them once the models are uploaded); also returns the .npz to upload, if any."""
    settings = farm_pb2.JobSettings()
    for name in ("min_runs", "min_seconds", "max_runs", "max_seconds", "warmup_runs",
                 "warmup_seconds", "threads", "runtime", "execution_provider",
                 "graph_optimization", "tflite_disable_xnnpack", "tflite_delegate_path",
                 "seed", "timeout_seconds", "sustained_seconds", "repeats", "warmup_max_seconds",
                 "profile_ops", "profile_ops_runs", "dynamic_dimension_default"):
        value = options.get(name)
        if value is not None:
            setattr(settings, name, value)
    for item in options.get("delegate_options") or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--delegate-option")
        settings.tflite_delegate_options[key] = value
    if options.get("memory_limit"):
        settings.memory_limit_bytes = parse_size(str(options["memory_limit"]))
    return settings, options.get("inputs_file")  # type: ignore[return-value]


def add_input_shapes(settings: farm_pb2.JobSettings, by_model: Dict[Optional[int], List[farm_pb2.InputShape]],
                     uploads: Sequence[Upload]) -> None:
    """Put the shapes of ``input_shapes_by_model`` into ``settings``, each model's own named by
    the sha256 its upload got (the controller gives every job only its model's shapes)."""
    for index, shapes in by_model.items():
        for shape in shapes:
            if index is not None:
                shape.model_sha256 = uploads[index].sha256
            settings.input_shapes.append(shape)
