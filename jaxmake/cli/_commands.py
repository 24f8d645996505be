"""The commands of the `jaxmake` program, one frozen config class each."""

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
from annotated_types import Ge, Gt, Le
from jax.sharding import Mesh
from tyro.conf import OmitArgPrefixes, Positional

import jaxmake as jm
from jaxmake import data, export, training
from jaxmake.cli._configs import (
    CliError,
    build_config,
    config_dict,
    file_batch_size,
    load_model_config,
    model_class,
    parse_set,
    train_table,
)
from jaxmake.cli._plot import plot_history
from jaxmake.cli._scale import Scale
from jaxmake.cli._summary import summary_table
from jaxmake.cli._tasks import DIGITS_RESNET, DIGITS_VIT, chars_gpt, chars_task, digits_resnet_task, digits_task
from jaxmake.components import DType, Gpt, ResNet, Vit, generate
from jaxmake.sharding import RULES

Count = Annotated[int, Ge(1)]
Rate = Annotated[float, Gt(0), Le(1)]

Precision = Literal["f32", "bf16", "f16", "float32", "bfloat16", "float16"]
"""What `--precision` takes: a compute dtype, by its short or its full name."""

COMPUTE_DTYPES: dict[Precision, DType] = {
    "f32": "float32",
    "bf16": "bfloat16",
    "f16": "float16",
    "float32": "float32",
    "bfloat16": "bfloat16",
    "float16": "float16",
}
"""The model config's `dtype` for each value of `--precision`."""


def steps_per_call_default(chunk: int) -> int:
    """`chunk` steps per compiled call on an accelerator, 1 on a CPU.

    On a GPU a small model's step is shorter than a dispatch (the digits ViT ran at
    620-650 steps/s on an H200, one step per call), so a `lax.scan` over many steps pays.
    On 2 CPU cores the digits ViT's step is compute-bound (7.8 ms for its gradient, 0.4 ms
    for a batch on the host): 22 steps per call measured 7.3 ms/step against 9.1, but a
    whole run 30 s against 29; and XLA's CPU backend runs a convolution's gradient about
    30 times slower inside a loop than outside one.
    """
    return chunk if jax.default_backend() != "cpu" else 1


def _loss_scaling(dtype: DType) -> training.LossScaling:
    """Dynamic loss scaling for a float16 model (its small gradients would underflow), none otherwise."""
    return "dynamic" if dtype == "float16" else "none"


DigitsModel = Literal["vit", "resnet"]
"""The models `train digits` trains: the seed's ViT, or a small ResNet with BatchNorm."""


class TrainDigits(jm.Config):
    """Train a ViT (the seed's, adapted to 8x8 images) or a ResNet on scikit-learn's handwritten digits.

    Args:
        out: the run folder: checkpoints, config.json, metrics.json and loss.png.
        config: a TOML or JSON file naming a `Vit` or a `ResNet` and its fields (a run's
            config.json works too): the model to train, computing in its dtype. It replaces
            the flags --model, --vit.*, --resnet.* and --precision, which must be left
            out. The batch size is the file's train.batch_size, if it has one (the only
            key of its train table read), unless a --batch-size is given.
        model: which model: `vit`, or `resnet` (with BatchNorm, its running statistics
            carried as state and checkpointed).
        epochs: passes over the 1,437 training images; by default 100 for the ViT, 20
            for the ResNet.
        batch_size: images per step.
        learning_rate: the peak AdamW learning rate (5% warmup, then cosine decay); by
            default 4e-3 for the ViT, 2e-3 for the ResNet.
        weight_decay: AdamW weight decay, on matrices only.
        label_smoothing: the training loss's label smoothing, in [0, 1); by default 0.1
            for the ViT, 0 for the ResNet.
        seed: seeds the weights, the batch order, the shifts and dropout.
        augment: shift each training image by up to one pixel.
        precision: the dtype the model computes in: f32, bf16 or f16 (or float32, bfloat16,
            float16); the weights, the optimizer and the loss stay float32. f16 also turns
            on dynamic loss scaling. (Set it here, not with --vit.dtype or --resnet.dtype.)
        steps_per_call: steps per compiled call (a `lax.scan`, see
            `TrainConfig.steps_per_call`); by default an epoch's steps on an accelerator,
            where a small model's step costs less than its dispatch, and 1 on a CPU, where
            it does not pay (see `steps_per_call_default`).
        resume: continue the run in `out` from its latest checkpoint.
        freeze: weight-path patterns of the weights not to train (see `TrainConfig.freeze`);
            e.g. `--freeze 'encoder.tfe_layer_0.*'`.
        learning_rate_factors: pattern and factor pairs multiplying the updates of the
            weights the pattern selects (see `TrainConfig.learning_rate_factors`).
        vit: the ViT's fields (with --model vit).
        resnet: the ResNet's fields (with --model resnet).
        scale: devices and processes.
    """

    out: Path = Path("runs/digits")
    config: Path | None = None
    model: DigitsModel = "vit"
    epochs: int | None = None
    batch_size: Count = 64
    learning_rate: float | None = None
    weight_decay: Annotated[float, Ge(0), Le(1)] = 0.05
    label_smoothing: float | None = None
    seed: Annotated[int, Ge(0)] = 0
    augment: bool = True
    precision: Precision = "f32"
    steps_per_call: int | None = None
    resume: bool = False
    freeze: tuple[str, ...] = ()
    learning_rate_factors: tuple[tuple[str, float], ...] = ()
    vit: Vit = DIGITS_VIT
    resnet: ResNet = DIGITS_RESNET
    scale: Annotated[Scale, OmitArgPrefixes] = Scale()

    def validate(self) -> None:
        # `Config` checks a union's type, not the bounds of its members.
        for name in ("epochs", "steps_per_call"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise self.error(name, "must be >= 1")
        if self.learning_rate is not None and not 0 < self.learning_rate <= 1:
            raise self.error("learning_rate", "must be in (0, 1]")
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            raise self.error("label_smoothing", "must be in [0, 1)")

    def run(self) -> None:
        chosen: Vit | ResNet
        if self.config is None:
            chosen = self.vit if self.model == "vit" else self.resnet
            if chosen.dtype != "float32":
                raise CliError(
                    f"--{self.model}.dtype {chosen.dtype}: set the dtype the model computes in with --precision "
                    f"(it also turns on loss scaling for float16), e.g. --precision {chosen.dtype}"
                )
            dtype, batch_size = COMPUTE_DTYPES[self.precision], self.batch_size
        else:
            chosen, batch_size = _model_of_file(
                self, self.config, (Vit, ResNet), ("model", "vit", "resnet", "precision")
            )
            dtype = chosen.dtype
        model: DigitsModel = "vit" if isinstance(chosen, Vit) else "resnet"

        def where(field: str) -> str:
            """How an error names a field of the model: its flag, or its name in the `--config` file."""
            if self.config is None:
                return f"--{model}.{field.replace('_', '-')}"
            return f"{self.config}: `{type(chosen).__name__}.{field}`"

        split = data.load_digits()
        if chosen.hwc != split.x_train.shape[1:]:
            raise CliError(
                f"{where('hwc')} must be {' '.join(map(str, split.x_train.shape[1:]))} (the digits are 8x8 images "
                f"of one channel), got {' '.join(map(str, chosen.hwc))}"
            )
        n_classes = int(split.y_train.max()) + 1
        n_outputs, outputs_field = (
            (chosen.dict_size_output, "dict_size_output")
            if isinstance(chosen, Vit)
            else (chosen.n_classes, "n_classes")
        )
        if n_outputs < n_classes:
            raise CliError(
                f"{where(outputs_field)} must be at least {n_classes} (the digits' classes), got {n_outputs}"
            )
        if batch_size > len(split.y_train):
            flag = "--batch-size" if batch_size == self.batch_size else f"{self.config}: train.batch_size"
            raise CliError(
                f"{flag} {batch_size} is larger than the {len(split.y_train):,} training images: "
                f"give at most {len(split.y_train):,}"
            )
        mesh = self.scale.start(batch_size)
        steps_per_epoch = data.steps_per_epoch(len(split.y_train), batch_size)
        epochs = self.epochs or (100 if model == "vit" else 20)
        label_smoothing = (0.1 if model == "vit" else 0.0) if self.label_smoothing is None else self.label_smoothing
        config = training.TrainConfig(
            steps=epochs * steps_per_epoch,
            batch_size=batch_size,
            learning_rate=self.learning_rate or (4e-3 if model == "vit" else 2e-3),
            weight_decay=self.weight_decay,
            eval_every=10 * steps_per_epoch,
            log_every=steps_per_epoch,
            checkpoint_every=10 * steps_per_epoch,
            seed=self.seed,
            loss_scaling=_loss_scaling(dtype),
            steps_per_call=self.steps_per_call or steps_per_call_default(steps_per_epoch),
            freeze=self.freeze,
            learning_rate_factors=self.learning_rate_factors,
        )
        key = jax.random.key(self.seed)
        task: training.Task | training.StatefulTask
        state = None
        if isinstance(chosen, Vit):
            vit = dataclasses.replace(chosen, dtype=dtype)
            model_config: Vit | ResNet = vit
            task = digits_task(vit, split, batch_size, self.seed, self.augment, label_smoothing)
            weights = self.scale.make_weights(key, Vit.make(vit).weight_params, mesh)
        else:
            resnet = dataclasses.replace(chosen, dtype=dtype)
            model_config = resnet
            task = digits_resnet_task(resnet, split, batch_size, self.seed, self.augment, label_smoothing)
            component = ResNet.make(resnet)
            weights = self.scale.make_weights(key, component.weight_params, mesh)
            state = jm.make_state(component.state_params)
        metadata = {
            "model": type(model_config).__name__,
            "config": config_dict(model_config),
            "task": {"name": "digits", "augment": self.augment},
        }
        title = "ViT" if model == "vit" else "ResNet"

        def summary(results: dict[str, float], seconds: float) -> str:
            return (
                f"test accuracy {results['test_accuracy']:.2%} after {epochs} epochs ({config.steps} steps) in "
                f"{seconds:.0f} s; run folder {self.out}"
            )

        report = _Report(f"{title} on digits", ["test_accuracy"], {}, summary)
        _train_and_report(task, weights, config, mesh, self.out, self.resume, metadata, report, state)


class TrainChars(jm.Config):
    """Train a character-level GPT on a text corpus available offline.

    Args:
        out: the run folder: checkpoints, config.json, metrics.json and loss.png.
        text: a UTF-8 text file; by default, the Python standard library's pydoc topics
            (`pydoc_data.topics`, about 465k characters of English, PSF license).
        config: a TOML or JSON file naming a `Gpt` and its fields (a run's config.json
            works too): the model to train, computing in its dtype; its vocab_size must be
            the corpus's count of characters. It replaces the flags --n-ctx,
            --n-tfe-layers, --dim-model, --n-heads and --precision, which must be left
            out. The batch size is the file's train.batch_size, if it has one (the only
            key of its train table read), unless a --batch-size is given.
        steps: optimizer steps.
        batch_size: windows of `n_ctx` characters per step.
        learning_rate: the peak AdamW learning rate (5% warmup, then cosine decay).
        seed: seeds the weights, the windows and dropout.
        n_ctx: the context length, in characters.
        n_tfe_layers: transformer layers.
        dim_model: the model width.
        n_heads: attention heads (they must divide `dim_model`).
        precision: the dtype the model computes in: f32, bf16 or f16 (or float32, bfloat16,
            float16); the weights, the optimizer and the loss stay float32. f16 also turns
            on dynamic loss scaling.
        steps_per_call: steps per compiled call (see `TrainConfig.steps_per_call`); by
            default those between two log lines on an accelerator, 1 on a CPU.
        resume: continue the run in `out` from its latest checkpoint.
        freeze: weight-path patterns of the weights not to train, `!` exempting, the
            last that selects a weight deciding (see `TrainConfig.freeze`); e.g.
            `--freeze 'embedding.*' positional_encoding`.
        learning_rate_factors: pattern and factor pairs multiplying the updates of the
            weights the pattern selects (see `TrainConfig.learning_rate_factors`); e.g.
            `--learning-rate-factors 'embedding.*' 0.1`.
        scale: devices and processes.
    """

    out: Path = Path("runs/chars")
    text: Path | None = None
    config: Path | None = None
    steps: Count = 1500
    batch_size: Count = 32
    learning_rate: Rate = 3e-3
    seed: Annotated[int, Ge(0)] = 0
    n_ctx: Count = 64
    n_tfe_layers: Count = 2
    dim_model: Count = 128
    n_heads: Count = 4
    precision: Precision = "f32"
    steps_per_call: int | None = None
    resume: bool = False
    freeze: tuple[str, ...] = ()
    learning_rate_factors: tuple[tuple[str, float], ...] = ()
    scale: Annotated[Scale, OmitArgPrefixes] = Scale()

    def validate(self) -> None:
        if self.steps_per_call is not None and self.steps_per_call < 1:  # `Config` checks a union's type only
            raise self.error("steps_per_call", "must be >= 1")

    def run(self) -> None:
        try:
            text = data.load_text(self.text)
        except OSError as error:
            raise CliError(f"--text: cannot read {self.text}: {error.strerror or error}") from None
        model_flags = ("n_ctx", "n_tfe_layers", "dim_model", "n_heads", "precision")
        gpt, batch_size = (
            (None, self.batch_size) if self.config is None else _model_of_file(self, self.config, (Gpt,), model_flags)
        )
        mesh = self.scale.start(batch_size)
        if gpt is None:
            shape = {
                "n_ctx": self.n_ctx,
                "n_tfe_layers": self.n_tfe_layers,
                "dim_model": self.dim_model,
                "n_heads": self.n_heads,
                "dtype": COMPUTE_DTYPES[self.precision],
            }
            gpt = build_config(Gpt, {**config_dict(chars_gpt(text.vocab.size)), **shape}, "jaxmake train chars")
        elif gpt.vocab_size != text.vocab.size:
            raise CliError(
                f"{self.config}: `Gpt.vocab_size`={gpt.vocab_size} must be the corpus's {text.vocab.size} characters "
                f"(`vocab_multiple` pads the embedding and head): set vocab_size = {text.vocab.size}"
            )
        config = training.TrainConfig(
            steps=self.steps,
            batch_size=batch_size,
            learning_rate=self.learning_rate,
            eval_every=max(self.steps // 5, 1),
            log_every=max(self.steps // 50, 1),
            checkpoint_every=max(self.steps // 5, 1),
            seed=self.seed,
            loss_scaling=_loss_scaling(gpt.dtype),
            steps_per_call=self.steps_per_call or steps_per_call_default(max(self.steps // 50, 1)),
            freeze=self.freeze,
            learning_rate_factors=self.learning_rate_factors,
        )
        task = chars_task(gpt, text, batch_size, self.seed)
        weights = self.scale.make_weights(jax.random.key(self.seed), Gpt.make(gpt).weight_params, mesh)
        metadata = {
            "model": "Gpt",
            "config": config_dict(gpt),
            "task": {"name": "chars", "vocab": list(text.vocab.chars)},
        }
        baseline = {"unigram_baseline": data.unigram_entropy(text.train, text.valid, text.vocab.size)}

        def summary(results: dict[str, float], seconds: float) -> str:
            return (
                f"validation loss {results['valid_loss']:.3f} nats/char vs the unigram baseline "
                f"{results['unigram_baseline']:.3f} after {self.steps} steps in {seconds:.0f} s; run folder {self.out}"
            )

        report = _Report("GPT on characters", ["valid_loss"], baseline, summary)
        _train_and_report(task, weights, config, mesh, self.out, self.resume, metadata, report)


M = TypeVar("M", bound=jm.Config)


def _model_of_file(
    command: TrainChars | TrainDigits, path: Path, models: tuple[type[M], ...], model_flags: tuple[str, ...]
) -> tuple[M, int]:
    """The model a `train chars|digits --config` file names, and the batch size to train it with.

    The batch size is the file's `train.batch_size` where it has one and `--batch-size` is
    left at its default; the rest of its `train` table is not read.

    Args:
        command: the `train chars` or `train digits` command.
        path: its `--config` file (a run's config.json works too).
        models: the config classes the command trains.
        model_flags: the command's fields that set the model instead; they must be left
            at their defaults (a field holding a config, like `vit`, field by field).

    Raises:
        CliError: the file cannot be read, is invalid or names another model, a model flag
            is set too, or its `train` is not a table or its `batch_size` not an integer >= 1.
    """
    cls, model, extra = load_model_config(path, frozenset({"train", "task", "metadata"}))
    if not isinstance(model, models):
        job, other = ("chars", "digits") if isinstance(command, TrainChars) else ("digits", "chars")
        trained_by_other = cls in (Gpt, Vit, ResNet)
        hint = f" (train a {cls.__name__} with `jaxmake train {other} --config {path}`)" if trained_by_other else ""
        trains = " or a ".join(m.__name__ for m in models)
        raise CliError(f"{path} configures {cls.__name__}: `jaxmake train {job}` trains a {trains}{hint}")
    defaults = {f.name: f.default for f in dataclasses.fields(command)}
    flags: list[str] = []
    for name in model_flags:
        value, default = getattr(command, name), defaults[name]
        if isinstance(value, jm.Config):  # `--vit.*`: each field set
            flags += [
                f"{name}.{f.name}"
                for f in dataclasses.fields(value)
                if getattr(value, f.name) != getattr(default, f.name)
            ]
        elif value != default:
            flags.append(name)
    if flags:
        listed = ", ".join(f"--{flag.replace('_', '-')}" for flag in flags)
        raise CliError(
            f"{listed} with --config: the model, its dtype included, comes from {path}; set it there, "
            "or leave out --config"
        )
    batch_size = file_batch_size(path, train_table(path, extra))
    return model, (batch_size if batch_size and command.batch_size == defaults["batch_size"] else command.batch_size)


MAX_SAMPLE_TOKENS = 1_000_000
"""The most characters `jaxmake sample` generates in one call."""

SAMPLE_CHUNK = 256
"""`jaxmake sample` generates (and prints) this many characters per compiled call."""


class CharsRun(NamedTuple):
    """What a `jaxmake train chars` run holds: its `Gpt` config, the component, the vocabulary, the latest weights."""

    config: Gpt
    component: jm.Component
    vocab: data.CharVocab
    weights: jm.Weights


def load_chars_run(run: Path) -> CharsRun:
    """Read a `jaxmake train chars` run folder (for `sample` and `export`).

    Raises:
        CliError: the folder is not a chars run, or its config.json is damaged.
        RunDirError: it holds no config.json, or no intact checkpoint.
        WeightsError: its weights do not match its config.
    """
    metadata = training.load_metadata(run)
    task = metadata.get("task")
    if metadata.get("model") != "Gpt" or not isinstance(task, dict) or not isinstance(task.get("vocab"), list):
        raise CliError(
            f"{run} is not a `jaxmake train chars` run (its config.json names the model "
            f"{jm.value_repr(metadata.get('model'))} and no vocabulary)"
        )
    fields = metadata.get("config")
    if not isinstance(fields, dict):
        raise CliError(f"{run / 'config.json'} is damaged: its 'config' is not a table of Gpt fields")
    gpt = build_config(Gpt, fields, str(run / "config.json"))
    component = Gpt.make(gpt)
    vocab = data.CharVocab(tuple(task["vocab"]))
    if vocab.size != gpt.vocab_size:
        raise CliError(f"{run / 'config.json'} is damaged: {vocab.size} characters for {gpt.vocab_size} tokens")
    return CharsRun(gpt, component, vocab, training.load_weights(run, component.weight_params))


class Sample(jm.Config):
    """Generate text from a `jaxmake train chars` run, printed as it comes (Ctrl-C stops it).

    Decodes with the key/value cache (`generate`): the prompt in one call, then one
    character per step, 256 characters per compiled call.

    Args:
        run: the run folder.
        prompt: the text to continue (its characters must be in the run's vocabulary).
        tokens: how many characters to generate, at most 1,000,000.
        temperature: lower is greedier, in [0.001, 1000].
        top_k: sample among the `top_k` most likely characters only (0, or the vocabulary's size or more: all).
        seed: seeds the sampling; the same seed gives the same text.
        slide: once the context holds the run's `n_ctx` characters, how far its window moves
            at a time (the rest is run afresh; see `generate`): 1 is exactly the last
            `n_ctx` characters for every new one, and slowest; 0 (the default) is a quarter
            of `n_ctx`; at most `n_ctx`.
    """

    run: Path
    prompt: str = "The "
    tokens: Annotated[int, Ge(0), Le(MAX_SAMPLE_TOKENS)] = 200
    temperature: Annotated[float, Ge(1e-3), Le(1e3)] = 0.8
    top_k: Annotated[int, Ge(0)] = 0
    seed: Annotated[int, Ge(0)] = 0
    slide: Annotated[int, Ge(0)] = 0

    def run_command(self) -> None:
        gpt, component, vocab, weights = load_chars_run(self.run)
        prompt = jnp.asarray(vocab.encode(self.prompt))
        if prompt.shape[0] == 0:
            raise CliError("the prompt must hold at least one character")
        if self.slide > gpt.n_ctx:
            raise CliError(f"--slide {self.slide} is more than the run's n_ctx={gpt.n_ctx}")
        print(self.prompt, end="", flush=True)
        context, key = prompt[-gpt.n_ctx :], jax.random.key(self.seed)
        for chunk, start in enumerate(range(0, self.tokens, SAMPLE_CHUNK)):
            n_new = min(SAMPLE_CHUNK, self.tokens - start)
            sampled = generate(
                component,
                weights,
                context,
                n_new,
                jax.random.fold_in(key, chunk),
                temperature=self.temperature,
                top_k=self.top_k if 0 < self.top_k < vocab.size else None,
                slide=self.slide or max(gpt.n_ctx // 4, 1),
            )
            print(vocab.decode([int(t) for t in sampled[-n_new:]]), end="", flush=True)
            context = sampled[-gpt.n_ctx :]
        print()


class Export(jm.Config):
    """Export a `jaxmake train chars` run's model (tokens -> logits) for serving with plain JAX and NumPy.

    Writes `out/model.jaxexport` (`jax.export`, a batch of token sequences `[batch, T]`,
    T <= n_ctx, to logits `[batch, T, vocab_size]`), `out/weights.npz` and
    `out/signature.json` (shapes, limits, and the vocabulary under `metadata`).

    Args:
        run: the run folder.
        out: the folder to write; it must not exist or be empty, unless --force.
        force: write into a folder that is not empty, replacing an earlier export's three files.
    """

    run: Path
    out: Path
    force: bool = False

    def run_command(self) -> None:
        gpt, component, vocab, weights = load_chars_run(self.run)
        if self.out.exists() and not self.out.is_dir():
            raise CliError(f"--out {self.out} is a file: an export is written to a folder")
        if self.out.is_dir() and any(self.out.iterdir()) and not self.force:
            raise CliError(f"--out {self.out} is not empty: choose a new folder, or pass --force to write into it")
        exported = export.export(component, batch=True)
        metadata = {"vocab": list(vocab.chars), "run": str(self.run), "model": "Gpt", "config": config_dict(gpt)}
        folder = export.save(self.out, exported, weights, metadata, overwrite=self.force)
        size = (folder / export.ARTIFACT).stat().st_size
        print(
            f"wrote {folder}: {export.ARTIFACT} ({size:,} bytes; tokens [batch, T <= {gpt.n_ctx}] -> logits "
            f"[batch, T, {gpt.vocab_size}]), {export.WEIGHTS} ({(folder / export.WEIGHTS).stat().st_size:,} bytes), "
            f"{export.SIGNATURE}"
        )


class Summary(jm.Config):
    """Print a table of every weight of a library model: path, shape, dtype, count, bytes.

    Args:
        model: a library config class, e.g. Vit, Gpt, Mlp.
        config: a TOML or JSON file with a `config` table of fields (and `model`).
        set: field values as `FIELD=VALUE` (VALUE in JSON: `n_in=3`, `n_hidden=[4,4]`).
        rules: also show each weight's partition spec under a rule preset (dp, fsdp, tp, fsdp_tp).
    """

    model: Positional[str]
    config: Path | None = None
    set: tuple[str, ...] = ()
    rules: Literal["dp", "fsdp", "tp", "fsdp_tp"] | None = None

    def run(self) -> None:
        cls = model_class(self.model)
        fields = {}
        if self.config is not None:
            file_cls, file_config, _ = load_model_config(self.config, frozenset({"train", "task", "metadata"}))
            if file_cls is not cls:
                raise CliError(f"{self.config} configures {file_cls.__name__}, not {cls.__name__}")
            fields = config_dict(file_config)
        fields |= parse_set(self.set, "--set")
        config = build_config(cls, fields, "jaxmake summary (set fields with --set FIELD=VALUE or --config FILE)")
        component = cls.make(config)  # type: ignore[attr-defined]
        print(summary_table(repr(config), component.weight_params, None if self.rules is None else RULES[self.rules]))


class Check(jm.Config):
    """Validate a config file and run its make-time contracts; print what was checked.

    Args:
        file: a TOML or JSON file with `model` and `config` (a run's config.json works too).
    """

    file: Positional[Path]

    def run(self) -> None:
        cls, config, _ = load_model_config(self.file, frozenset({"train", "task", "metadata"}))
        with jm.recorded_contracts() as checked:
            component = cls.make(config)  # type: ignore[attr-defined]
        n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(jm.abstract_weights(component.weight_params)))
        print(f"{self.file}: {config!r} is valid")
        print(f"{len(checked)} make-time contracts hold:")
        for line in checked:
            print(f"  {line}")
        print(f"{n_params:,} parameters")


class _Report(NamedTuple):
    """What a training command reports on process 0 after training.

    Args:
        title: the plot's title.
        evaluations: the evaluation metrics to plot.
        extra_results: added to `metrics.json`'s results (e.g. a baseline).
        summary: the closing line, from the results and the seconds training took.
    """

    title: str
    evaluations: list[str]
    extra_results: dict[str, float]
    summary: Callable[[dict[str, float], float], str]


def _train_and_report(
    task: training.Task | training.StatefulTask,
    weights: jm.Weights,
    config: training.TrainConfig,
    mesh: Mesh | None,
    out: Path,
    resume: bool,
    metadata: dict[str, Any],
    report: _Report,
    state: jm.Weights | None = None,
) -> None:
    """Train (on `mesh`, if any); then, on process 0 only, record, plot and print the `report`."""
    started = time.perf_counter()
    try:
        training.train(task, weights, config, out, state=state, resume=resume, metadata=metadata, mesh=mesh)
    except FileExistsError:  # `train` refuses to start afresh over checkpoints
        raise CliError(f"{out} already holds a run: pass --resume to continue it, or choose another --out") from None
    seconds = time.perf_counter() - started
    if jax.process_index() != 0:
        return
    if report.extra_results:
        training.record_results(out, report.extra_results)
    results: dict[str, float] = json.loads((out / "metrics.json").read_text())["results"]
    plot_history(out, report.title, report.evaluations)
    print(report.summary(results, seconds))
