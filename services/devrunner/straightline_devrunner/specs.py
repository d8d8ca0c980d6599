"""A job spec checked and turned into what runs it: the trainer's command line for a train or
verify job, and the job's dataset directory. Every client-chosen value is checked here: names
that become paths (through `straightline_common.names`), numbers against their ranges, labels
against their sizes."""

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from google.protobuf.message import Message

from straightline.v1 import devrunner_pb2
from straightline_common.errors import InvalidArgument, NotFound
from straightline_common.limits import check_string
from straightline_common.modelstore import ModelStore
from straightline_common.names import inside, shown

MAX_EPOCHS = 10_000
MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE = 32, 63, 256
RESOURCE_RANGES = (("gpus", 1, 16), ("cpus", 0.01, 1024.0), ("memory_bytes", 2**20, 2**40))
TRAIN_RANGES = (
    ("input_size", 32, 1024),
    ("epochs", 1, MAX_EPOCHS),
    ("batch_size", 1, 4096),
    ("validation_split", 0.0, 0.9),
    ("learning_rate", 1e-9, 10.0),
    ("decay_steps", 1, 10_000_000),
    ("decay_rate", 1e-9, 1.0),
    ("k_folds", 2, 100),
    ("seed", 0, 2**31 - 1),
)
_KINDS = {
    "train": devrunner_pb2.JOB_KIND_TRAIN,
    "verify": devrunner_pb2.JOB_KIND_VERIFY,
    "package": devrunner_pb2.JOB_KIND_PACKAGE,
}


def kind_of(spec: devrunner_pb2.JobSpec) -> devrunner_pb2.JobKind:
    which = spec.WhichOneof("spec")
    if which is None:
        raise InvalidArgument("the job spec has no train, verify or package part")
    return _KINDS[which]


def check_labels(labels: Mapping[str, str]) -> None:
    """Labels are kept with the job and listed with it: bounded, so that no job makes a
    ListJobs page too large to send."""
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"a job has at most {MAX_LABELS} labels")
    for key, value in labels.items():
        check_string("a label's key", key, MAX_LABEL_KEY)
        check_string(f"label {shown(key)}", value, MAX_LABEL_VALUE)


def check_resource_ranges(asked: devrunner_pb2.Resources) -> None:
    _check_ranges(asked, RESOURCE_RANGES, "resources.")


def _check_ranges(
    message: Message, ranges: Iterable[tuple[str, float, float]], prefix: str = ""
) -> None:
    """Every number within what a run can use (0: the default); a negative number sent as
    unsigned arrives as a huge one, and NaN is in no range."""
    for name, low, high in ranges:
        value = getattr(message, name)
        if value and not low <= value <= high:
            raise InvalidArgument(f"{prefix}{name} must be between {low} and {high} (or unset)")


class TrainerCommands:
    """The trainer's command line for train and verify jobs, with the dataset and the model
    store where the runner's jobs see them (`job_paths`)."""

    def __init__(self, datasets: Path, store: ModelStore) -> None:
        self._datasets = datasets
        self._store = store

    def dataset(self, kind: devrunner_pb2.JobKind, spec: devrunner_pb2.JobSpec) -> str:
        """The job's dataset directory on this host, checked."""
        part = spec.train if kind == devrunner_pb2.JOB_KIND_TRAIN else spec.verify
        return self._dataset_directory(part.dataset_path)

    def arguments(
        self, kind: devrunner_pb2.JobKind, spec: devrunner_pb2.JobSpec, dataset: str, store: str
    ) -> list[str]:
        """The trainer's arguments; `dataset` and `store`: where the job sees them."""
        if kind == devrunner_pb2.JOB_KIND_TRAIN:
            return self._train_arguments(spec.train, dataset, store)
        if kind == devrunner_pb2.JOB_KIND_VERIFY:
            return self._verify_arguments(spec.verify, dataset, store)
        raise AssertionError("package jobs do not run the trainer")

    def _train_arguments(
        self, train: devrunner_pb2.TrainSpec, dataset: str, store: str
    ) -> list[str]:
        _check_ranges(train, TRAIN_RANGES)
        arguments = [
            "train",
            "--dataset",
            dataset,
            "--store",
            store,
            "--model-name",
            train.model_name or "model",
        ]
        for name, _, _ in TRAIN_RANGES:
            value = getattr(train, name)
            if value:
                arguments += [f"--{name.replace('_', '-')}", str(value)]
        return arguments

    def _verify_arguments(
        self, verify: devrunner_pb2.VerifySpec, dataset: str, store: str
    ) -> list[str]:
        stored = self._store.resolve(verify.model.name, verify.model.version)
        if not 0 <= verify.accuracy_threshold <= 1:  # NaN is not either
            raise InvalidArgument("accuracy_threshold must be in [0, 1]")
        return [
            "verify",
            "--dataset",
            dataset,
            "--store",
            store,
            "--model",
            f"{stored.name}:{stored.version}",
            "--threshold",
            str(verify.accuracy_threshold),
        ]

    def _dataset_directory(self, name: str) -> str:
        """`name` relative to the datasets root, an existing directory under it."""
        if not name:
            raise InvalidArgument("dataset_path is empty; name the directory of class folders")
        if os.path.isabs(name):
            raise InvalidArgument(
                "dataset_path must be relative to the devrunner's datasets directory, not absolute"
            )
        check_string("dataset_path", name, 255)
        path = inside(self._datasets, name)
        if not path.is_dir():
            raise NotFound(
                f"dataset {shown(name)} does not exist or is not a directory under the "
                "devrunner's datasets directory"
            )
        return str(path)
