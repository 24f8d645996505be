"""The commands of the `jaxmake` program, one frozen config class each."""

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from annotated_types import Ge, Gt, Le
from jax.sharding import Mesh
from tyro.conf import OmitArgPrefixes, Positional

import jaxmake as jm
from jaxmake import data, training
from jaxmake.cli._configs import CliError, build_config, config_dict, load_model_config, model_class, parse_value
from jaxmake.cli._plot import plot_history
from jaxmake.cli._scale import Scale
from jaxmake.cli._summary import summary_table
from jaxmake.cli._tasks import DIGITS_VIT, chars_gpt, chars_task, digits_task
from jaxmake.components import DType, Gpt, Vit, generate
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


def _loss_scaling(dtype: DType) -> training.LossScaling:
    """Dynamic loss scaling for a float16 model (its small gradients would underflow), none otherwise."""
    return "dynamic" if dtype == "float16" else "none"


class TrainDigits(jm.Config):
    """Train the seed's ViT (adapted to 8x8 images) on scikit-learn's handwritten digits.

    Args:
        out: the run folder: checkpoints, config.json, metrics.json and loss.png.
        epochs: passes over the 1,437 training images.
        batch_size: images per step.
        learning_rate: the peak AdamW learning rate (5% warmup, then cosine decay).
        weight_decay: AdamW weight decay, on matrices only.
        seed: seeds the weights, the batch order, the shifts and dropout.
        augment: shift each training image by up to one pixel.
        precision: the dtype the model computes in: f32, bf16 or f16 (or float32, bfloat16,
            float16); the weights, the optimizer and the loss stay float32. f16 also turns
            on dynamic loss scaling. (Set it here, not with --model.dtype.)
        resume: continue the run in `out` from its latest checkpoint.
        model: the ViT.
        scale: devices and processes.
    """

    out: Path = Path("runs/digits")
    epochs: Count = 100
    batch_size: Count = 64
    learning_rate: Rate = 2e-3
    weight_decay: Annotated[float, Ge(0), Le(1)] = 0.05
    seed: Annotated[int, Ge(0)] = 0
    augment: bool = True
    precision: Precision = "f32"
    resume: bool = False
    model: Vit = DIGITS_VIT
    scale: Annotated[Scale, OmitArgPrefixes] = Scale()

    def run(self) -> None:
        if self.model.dtype != "float32":
            raise CliError(
                f"--model.dtype {self.model.dtype}: set the dtype the model computes in with --precision "
                f"(it also turns on loss scaling for float16), e.g. --precision {self.model.dtype}"
            )
        dtype = COMPUTE_DTYPES[self.precision]
        vit = dataclasses.replace(self.model, dtype=dtype)
        split = data.load_digits()
        if self.model.hwc != split.x_train.shape[1:]:
            raise CliError(
                f"--model.hwc must be {' '.join(map(str, split.x_train.shape[1:]))} (the digits are 8x8 images of one "
                f"channel), got {' '.join(map(str, self.model.hwc))}"
            )
        n_classes = int(split.y_train.max()) + 1
        if self.model.dict_size_output < n_classes:
            raise CliError(
                f"--model.dict-size-output must be at least {n_classes} (the digits' classes), "
                f"got {self.model.dict_size_output}"
            )
        if self.batch_size > len(split.y_train):
            raise CliError(
                f"--batch-size {self.batch_size} is larger than the {len(split.y_train):,} training images: "
                f"give at most {len(split.y_train):,}"
            )
        mesh = self.scale.start(self.batch_size)
        steps_per_epoch = data.steps_per_epoch(len(split.y_train), self.batch_size)
        config = training.TrainConfig(
            steps=self.epochs * steps_per_epoch,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            eval_every=10 * steps_per_epoch,
            log_every=steps_per_epoch,
            checkpoint_every=10 * steps_per_epoch,
            seed=self.seed,
            loss_scaling=_loss_scaling(dtype),
        )
        task = digits_task(vit, split, self.batch_size, self.seed, self.augment)
        weights = self.scale.make_weights(jax.random.key(self.seed), Vit.make(vit).weight_params, mesh)
        metadata = {
            "model": "Vit",
            "config": config_dict(vit),
            "task": {"name": "digits", "augment": self.augment},
        }

        def summary(results: dict[str, float], seconds: float) -> str:
            return (
                f"test accuracy {results['test_accuracy']:.2%} after {self.epochs} epochs ({config.steps} steps) in "
                f"{seconds:.0f} s; run folder {self.out}"
            )

        report = _Report("ViT on digits", ["test_accuracy"], {}, summary)
        _train_and_report(task, weights, config, mesh, self.out, self.resume, metadata, report)


class TrainChars(jm.Config):
    """Train a character-level GPT on a text corpus available offline.

    Args:
        out: the run folder: checkpoints, config.json, metrics.json and loss.png.
        text: a UTF-8 text file; by default, the Python standard library's pydoc topics
            (`pydoc_data.topics`, about 465k characters of English, PSF license).
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
        resume: continue the run in `out` from its latest checkpoint.
        scale: devices and processes.
    """

    out: Path = Path("runs/chars")
    text: Path | None = None
    steps: Count = 1500
    batch_size: Count = 32
    learning_rate: Rate = 3e-3
    seed: Annotated[int, Ge(0)] = 0
    n_ctx: Count = 64
    n_tfe_layers: Count = 2
    dim_model: Count = 128
    n_heads: Count = 4
    precision: Precision = "f32"
    resume: bool = False
    scale: Annotated[Scale, OmitArgPrefixes] = Scale()

    def run(self) -> None:
        try:
            text = data.load_text(self.text)
        except OSError as error:
            raise CliError(f"--text: cannot read {self.text}: {error.strerror or error}") from None
        mesh = self.scale.start(self.batch_size)
        shape = {
            "n_ctx": self.n_ctx,
            "n_tfe_layers": self.n_tfe_layers,
            "dim_model": self.dim_model,
            "n_heads": self.n_heads,
            "dtype": COMPUTE_DTYPES[self.precision],
        }
        gpt = build_config(Gpt, {**config_dict(chars_gpt(text.vocab.size)), **shape}, "jaxmake train chars")
        config = training.TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            eval_every=max(self.steps // 5, 1),
            log_every=max(self.steps // 50, 1),
            checkpoint_every=max(self.steps // 5, 1),
            seed=self.seed,
            loss_scaling=_loss_scaling(gpt.dtype),
        )
        task = chars_task(gpt, text, self.batch_size, self.seed)
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


MAX_SAMPLE_TOKENS = 1_000_000
"""The most characters `jaxmake sample` generates in one call."""

SAMPLE_CHUNK = 256
"""`jaxmake sample` generates (and prints) this many characters per compiled call."""


class Sample(jm.Config):
    """Generate text from a `jaxmake train chars` run, printed as it comes (Ctrl-C stops it).

    Args:
        run: the run folder.
        prompt: the text to continue (its characters must be in the run's vocabulary).
        tokens: how many characters to generate, at most 1,000,000.
        temperature: lower is greedier, in [0.001, 1000].
        top_k: sample among the `top_k` most likely characters only (0, or the vocabulary's size or more: all).
        seed: seeds the sampling; the same seed gives the same text.
    """

    run: Path
    prompt: str = "The "
    tokens: Annotated[int, Ge(0), Le(MAX_SAMPLE_TOKENS)] = 200
    temperature: Annotated[float, Ge(1e-3), Le(1e3)] = 0.8
    top_k: Annotated[int, Ge(0)] = 0
    seed: Annotated[int, Ge(0)] = 0

    def run_command(self) -> None:
        metadata = training.load_metadata(self.run)
        task = metadata.get("task")
        if metadata.get("model") != "Gpt" or not isinstance(task, dict) or not isinstance(task.get("vocab"), list):
            raise CliError(
                f"{self.run} is not a `jaxmake train chars` run (its config.json names the model "
                f"{jm.value_repr(metadata.get('model'))} and no vocabulary)"
            )
        fields = metadata.get("config")
        if not isinstance(fields, dict):
            raise CliError(f"{self.run / 'config.json'} is damaged: its 'config' is not a table of Gpt fields")
        gpt = build_config(Gpt, fields, str(self.run / "config.json"))
        component = Gpt.make(gpt)
        vocab = data.CharVocab(tuple(task["vocab"]))
        if vocab.size != gpt.vocab_size:
            raise CliError(
                f"{self.run / 'config.json'} is damaged: {vocab.size} characters for {gpt.vocab_size} tokens"
            )
        prompt = jnp.asarray(vocab.encode(self.prompt))
        if prompt.shape[0] == 0:
            raise CliError("the prompt must hold at least one character")
        weights = training.load_weights(self.run, component.weight_params)
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
            )
            print(vocab.decode([int(t) for t in sampled[-n_new:]]), end="", flush=True)
            context = sampled[-gpt.n_ctx :]
        print()


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
        for item in self.set:
            name, equals, value = item.partition("=")
            if not equals:
                raise CliError(f"--set takes FIELD=VALUE, got {item!r}")
            try:
                fields[name] = parse_value(value, "JSON")
            except ValueError:
                fields[name] = value
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
    task: training.Task,
    weights: jm.Weights,
    config: training.TrainConfig,
    mesh: Mesh | None,
    out: Path,
    resume: bool,
    metadata: dict[str, Any],
    report: _Report,
) -> None:
    """Train (on `mesh`, if any); then, on process 0 only, record, plot and print the `report`."""
    started = time.perf_counter()
    try:
        training.train(task, weights, config, out, resume=resume, metadata=metadata, mesh=mesh)
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
