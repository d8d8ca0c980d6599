"""The job program: trains or verifies a model and reports as it goes, one JSON object per
line on stdout (the devrunner reads them from the container's or process's output).

    python -m straightline_devrunner.trainer train --dataset DIR --store DIR --model-name NAME
    python -m straightline_devrunner.trainer verify --dataset DIR --store DIR --model NAME[:V]

Lines: {"event": "start" | "phase" | "progress" | "epoch" | "result" | "error", ...}; a
phase (loading data, building, fitting, saving, evaluating) gives its wall-clock start and
end, which the devrunner turns into spans of the job's trace: a job container has no network
to export spans itself. The job's trace context arrives in TRACEPARENT; the start line echoes
its trace id. Exit status 0 when
the job did its work (a verification that fails its threshold included: the result says
so), 2 for a bad job spec, 1 for anything else.

Training follows the paper: Keras Xception (weights=None) with its own input rescaling,
Adam at 1e-4 decayed by 0.96 every 300 steps, validation split 0.2, 20 epochs; k-fold
cross-validation when --k-folds is 2 or more (the model of the best fold is kept).

One addition: before each validation (and so before the model is saved) the batch
normalization statistics are re-estimated from up to --bn-calibration-batches training
batches. Keras keeps them as moving averages with momentum 0.99, which take some hundreds of
steps to forget their initial values; a short run (a test's two epochs of four steps) would
otherwise be scored and saved with statistics that have nothing to do with its data, and
answer at chance in inference mode however well it trained. The weights are untouched.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from straightline_common.errors import InvalidArgument, NotFound, ServiceError
from straightline_common.modelstore import ModelStore, ModelVersion
from straightline_common.names import check_model_name
from straightline_devrunner import dataset
from straightline_devrunner.dataset import Files, ImageSet

# TensorFlow's objects (models, layers, datasets, tensors): it ships no type information.
TF = Any
Logs = Any  # Keras's dict of metrics

SMALLEST_XCEPTION_INPUT = 71


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


@contextmanager
def phase(name: str, **attributes: Any) -> Iterator[None]:
    started = time.time()
    yield
    emit("phase", name=name, start_s=started, end_s=time.time(), **attributes)


def _trace_id() -> str:
    """The trace id in TRACEPARENT (version-traceid-spanid-flags), or ''."""
    parts = os.environ.get("TRACEPARENT", "").split("-")
    return parts[1] if len(parts) == 4 else ""


def _images(
    files: Files, size: int, batch_size: int, classes: int, shuffle_seed: int | None = None
) -> TF:
    import tensorflow as tf

    paths = [str(path) for path, _ in files]
    labels = tf.one_hot([label for _, label in files], classes)

    def decode(path: TF, label: TF) -> tuple[TF, TF]:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return tf.image.resize(tf.cast(image, tf.float32), (size, size)), label

    data = tf.data.Dataset.from_tensor_slices((paths, labels))
    if shuffle_seed is not None:
        data = data.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)


def _xception(size: int, classes: int, args: argparse.Namespace) -> TF:
    import tensorflow as tf

    model = tf.keras.Sequential(
        [
            tf.keras.Input((size, size, 3)),
            tf.keras.layers.Rescaling(1 / 127.5, offset=-1),
            tf.keras.applications.Xception(
                weights=None, classes=classes, input_shape=(size, size, 3)
            ),
        ]
    )
    schedule = tf.keras.optimizers.schedules.ExponentialDecay(
        args.learning_rate,
        decay_steps=args.decay_steps,
        decay_rate=args.decay_rate,
        staircase=True,
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(schedule),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _batch_norm_layers(layer: TF) -> Iterator[TF]:
    import tensorflow as tf

    for sublayer in getattr(layer, "layers", []):
        if isinstance(sublayer, tf.keras.layers.BatchNormalization):
            yield sublayer
        yield from _batch_norm_layers(sublayer)


def calibrate_batch_norm(model: TF, batches: Iterable[tuple[TF, TF]]) -> None:
    """Sets every batch normalization layer's moving mean and variance to the average of its
    batch statistics over `batches` (forward passes in training mode; no weight changes)."""
    layers = list(_batch_norm_layers(model))
    momenta = [layer.momentum for layer in layers]
    try:
        for seen, (images, _) in enumerate(batches, start=1):
            for layer in layers:
                layer.momentum = (seen - 1) / seen  # a running mean: batch i weighs 1/i
            model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def _calibration(train_data: TF, batches: int) -> TF:
    import tensorflow as tf

    class Calibrate(tf.keras.callbacks.Callback):  # type: ignore[misc]
        def on_test_begin(self, logs: Logs = None) -> None:
            calibrate_batch_norm(self.model, train_data.take(batches))

    return Calibrate()


def _callbacks(args: argparse.Namespace, fold: int, steps: int, train_data: TF) -> list[TF]:
    callbacks = [_reporter(args.epochs, fold, steps)]
    if args.bn_calibration_batches:
        callbacks.append(_calibration(train_data, args.bn_calibration_batches))
    return callbacks


def _reporter(epochs: int, fold: int, steps: int) -> TF:
    import tensorflow as tf

    class Report(tf.keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
            self.started = time.perf_counter()
            self.epoch = epoch + 1

        def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
            emit(
                "progress",
                epoch=self.epoch,
                step=batch + 1,
                steps=steps,
                loss=float(logs.get("loss", 0)),
                accuracy=float(logs.get("accuracy", 0)),
            )

        def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
            emit(
                "epoch",
                epoch=epoch + 1,
                epochs=epochs,
                fold=fold,
                loss=float(logs["loss"]),
                accuracy=float(logs["accuracy"]),
                val_loss=float(logs.get("val_loss", 0)),
                val_accuracy=float(logs.get("val_accuracy", 0)),
                elapsed_s=time.perf_counter() - self.started,
            )

    return Report()


def train(args: argparse.Namespace) -> None:
    check_training_arguments(args)
    with phase("load_dataset"):
        images = dataset.load(args.dataset, args.seed)
    import tensorflow as tf

    # Seeds Python's `random` too, which OpenTelemetry draws ids from: a traced trainer must
    # reseed it (or use its own id generator) before opening spans.
    tf.keras.utils.set_random_seed(args.seed)
    model, metrics = fit_best_fold(args, images)
    with phase("save"):
        version = save_version(args, images, model, metrics)
    emit(
        "result",
        model={"name": version.name, "version": version.version},
        metrics=version.metadata["metrics"],
    )


def check_training_arguments(args: argparse.Namespace) -> None:
    check_model_name(args.model_name)
    if args.input_size < SMALLEST_XCEPTION_INPUT:
        raise InvalidArgument(
            f"input size must be at least {SMALLEST_XCEPTION_INPUT} (the "
            f"smallest Xception input), not {args.input_size}"
        )
    if args.epochs <= 0:
        raise InvalidArgument(f"epochs must be positive, not {args.epochs}")
    if args.bn_calibration_batches < 0:
        raise InvalidArgument(
            "--bn-calibration-batches must be 0 (off) or positive, "
            f"not {args.bn_calibration_batches}"
        )


def fit_best_fold(args: argparse.Namespace, images: ImageSet) -> tuple[TF, dict[str, float]]:
    """Fits one model per fold (one fold: the validation split) and keeps the one with the
    best final validation accuracy, with its final metrics."""
    splits = (
        list(images.folds(args.k_folds))
        if args.k_folds >= 2
        else [images.split(args.validation_split)]
    )
    emit(
        "start",
        classes=images.class_names,
        images=len(images.files),
        folds=len(splits),
        trace_id=_trace_id(),
    )
    best = None
    for fold, (training, validation) in enumerate(splits, start=1 if len(splits) > 1 else 0):
        classes = len(images.class_names)
        with phase("build_model", fold=fold):
            model = _xception(args.input_size, classes, args)
        train_data = _images(training, args.input_size, args.batch_size, classes, args.seed)
        val_data = _images(validation, args.input_size, args.batch_size, classes)
        steps = -(-len(training) // args.batch_size)
        with phase("fit", fold=fold):
            history = model.fit(
                train_data,
                validation_data=val_data,
                epochs=args.epochs,
                verbose=0,
                callbacks=_callbacks(args, fold, steps, train_data),
            )
        val_accuracy = history.history["val_accuracy"][-1]
        if best is None or val_accuracy > best[0]:
            best = (val_accuracy, model, {k: v[-1] for k, v in history.history.items()})
    assert best is not None  # k_folds >= 2: at least one fold ran
    _, model, metrics = best
    return model, metrics


TRAINING_PARAMETERS = (
    "epochs",
    "batch_size",
    "validation_split",
    "learning_rate",
    "decay_steps",
    "decay_rate",
    "k_folds",
    "seed",
    "input_size",
    "bn_calibration_batches",
)


def save_version(
    args: argparse.Namespace, images: ImageSet, model: TF, metrics: dict[str, float]
) -> ModelVersion:
    """The model as a new version in the store, with what made it."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.h5"
        model.save(path)
        return ModelStore(args.store).add(
            args.model_name,
            path,
            {
                "class_names": images.class_names,
                "input_size": [args.input_size, args.input_size],
                "format": "keras-h5",
                "metrics": {k: float(v) for k, v in metrics.items()},
                "dataset": {
                    "path": args.dataset,
                    "fingerprint": images.fingerprint(),
                    "images": len(images.files),
                },
                "parameters": {k: getattr(args, k) for k in TRAINING_PARAMETERS},
                "job_id": args.job_id,
            },
        )


def verify(args: argparse.Namespace) -> None:
    name, _, version = args.model.partition(":")
    stored = ModelStore(args.store).resolve(name, version)
    if not 0 <= args.threshold <= 1:
        raise InvalidArgument(f"the accuracy threshold must be in [0, 1], not {args.threshold}")
    with phase("load_dataset"):
        images = dataset.load(args.dataset, args.seed)
    if images.class_names != stored.class_names:
        raise InvalidArgument(
            f"the dataset's classes {images.class_names} are not the model's {stored.class_names}"
        )
    import tensorflow as tf

    with phase("load_model"):
        model = tf.keras.models.load_model(stored.model_path, compile=False)
        model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    emit(
        "start",
        model={"name": stored.name, "version": stored.version},
        images=len(images.files),
        trace_id=_trace_id(),
    )
    size = stored.input_size[0]
    with phase("evaluate"):
        loss, accuracy = model.evaluate(
            _images(images.files, size, 16, len(images.class_names)), verbose=0
        )
    emit(
        "result",
        model={"name": stored.name, "version": stored.version},
        accuracy=float(accuracy),
        loss=float(loss),
        threshold=args.threshold,
        passed=bool(accuracy >= args.threshold),
    )


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="straightline-trainer", description=__doc__)
    jobs = main.add_subparsers(dest="job", required=True)
    for name in ("train", "verify"):
        job = jobs.add_parser(name)
        job.add_argument("--dataset", required=True)
        job.add_argument("--store", required=True)
        job.add_argument("--seed", type=int, default=0)
        job.add_argument("--job-id", default="")
    train_job = jobs.choices["train"]
    train_job.add_argument("--model-name", required=True)
    train_job.add_argument("--input-size", type=int, default=299)
    train_job.add_argument("--epochs", type=int, default=20)
    train_job.add_argument("--batch-size", type=int, default=16)
    train_job.add_argument("--validation-split", type=float, default=0.2)
    train_job.add_argument("--learning-rate", type=float, default=1e-4)
    train_job.add_argument("--decay-steps", type=int, default=300)
    train_job.add_argument("--decay-rate", type=float, default=0.96)
    train_job.add_argument("--k-folds", type=int, default=0)
    train_job.add_argument(
        "--bn-calibration-batches",
        type=int,
        default=20,
        help="training batches that re-estimate batch normalization statistics (0: off)",
    )
    verify_job = jobs.choices["verify"]
    verify_job.add_argument("--model", required=True)
    verify_job.add_argument("--threshold", type=float, default=0.5)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        (train if args.job == "train" else verify)(args)
    except (InvalidArgument, NotFound) as error:
        emit("error", kind=type(error).__name__, message=str(error))
        return 2
    except ServiceError as error:
        emit("error", kind=type(error).__name__, message=str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
