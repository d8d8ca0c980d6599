"""The job program: real training and verification with TensorFlow on images the test makes."""

import json
import subprocess
import sys

import pytest

from straightline_common.modelstore import ModelStore
from tests.support.models import make_image_folders

TRAINER = [sys.executable, "-m", "straightline_devrunner.trainer"]


def run(*args: str):
    result = subprocess.run([*TRAINER, *args], capture_output=True, text=True, timeout=600)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, events


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_image_folders(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """One small training run (71 px, 2 epochs) shared by the tests of this module."""
    store = tmp_path_factory.mktemp("store")
    code, events = run(
        "train",
        "--dataset",
        str(dataset),
        "--store",
        str(store),
        "--model-name",
        "colours",
        "--input-size",
        "71",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--job-id",
        "job-1",
    )
    assert code == 0, events
    return ModelStore(store), events


@pytest.mark.tensorflow
def test_training_reports_every_epoch_and_stores_a_version(trained, dataset):
    store, events = trained
    kinds = [e["event"] for e in events if e["event"] != "phase"]
    assert kinds[0] == "start" and kinds[-1] == "result"
    phases = [e for e in events if e["event"] == "phase"]
    assert [p["name"] for p in phases] == ["load_dataset", "build_model", "fit", "save"]
    assert all(p["start_s"] <= p["end_s"] for p in phases)
    built, fitted = events.index(phases[1]), events.index(phases[2])
    assert {e["event"] for e in events[built + 1 : fitted]} == {"progress", "epoch"}
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all({"loss", "accuracy", "val_loss", "val_accuracy"} <= set(e) for e in epochs)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["steps"] == 4  # 29 training images in batches of 8
    version = store.resolve("colours")
    assert events[-1]["model"] == {"name": "colours", "version": version.version}
    metadata = version.metadata
    assert metadata["class_names"] == ["blue", "green", "red"]
    assert metadata["input_size"] == [71, 71]
    assert metadata["job_id"] == "job-1"
    assert metadata["parameters"]["epochs"] == 2
    assert len(metadata["dataset"]["fingerprint"]) == 64
    assert metadata["checksum"].startswith("sha256:")
    assert version.model_path.stat().st_size > 1_000_000


def verify(store, dataset, threshold: float):
    code, events = run(
        "verify",
        *("--dataset", str(dataset), "--store", str(store.root)),
        *("--model", "colours:1", "--threshold", str(threshold)),
    )
    assert code == 0, events
    return events[-1]


@pytest.mark.tensorflow
def test_a_short_training_run_passes_verification_on_held_out_data(trained, tmp_path):
    """Two epochs of four steps learn the colours; the saved model must also answer well in
    inference mode, which needs its batch normalization statistics re-estimated."""
    store, _ = trained
    result = verify(store, make_image_folders(tmp_path / "held-out", seed=1), threshold=0.8)
    assert result["passed"] is True and result["accuracy"] >= 0.8


@pytest.mark.tensorflow
def test_verification_fails_a_threshold_the_data_makes_unreachable(trained, tmp_path):
    held_out = make_image_folders(tmp_path / "held-out", seed=2)
    (held_out / "blue" / "0.png").rename(held_out / "red" / "blue-0.png")  # mislabelled
    store, _ = trained
    result = verify(store, held_out, threshold=0.99)  # at best 35 of 36 right
    assert result["passed"] is False and result["accuracy"] < 0.99


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--dataset", "/nonexistent/images"], "does not exist"),
        (["--epochs", "-1"], "epochs must be positive"),
        (["--input-size", "32"], "at least 71"),
        (["--bn-calibration-batches", "-2"], "0 (off) or positive"),
        (["--model-name", "Bad Name!"], "is not valid"),
    ],
)
def test_bad_training_specs_are_refused_with_a_sentence(dataset, tmp_path, arguments, message):
    defaults = {
        "--dataset": str(dataset),
        "--store": str(tmp_path),
        "--model-name": "ok",
        "--input-size": "71",
        "--epochs": "1",
    }
    defaults.update(dict(zip(arguments[::2], arguments[1::2], strict=True)))
    code, events = run("train", *[item for pair in defaults.items() for item in pair])
    assert code == 2
    assert events[-1]["event"] == "error" and message in events[-1]["message"]


def test_class_folders_must_hold_images(tmp_path):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "dog").mkdir(parents=True)
    (tmp_path / "data" / "dog" / "1.png").write_bytes(b"")
    code, events = run(
        "train",
        "--dataset",
        str(tmp_path / "data"),
        "--store",
        str(tmp_path / "store"),
        "--model-name",
        "m",
        "--input-size",
        "71",
    )
    assert code == 2
    assert "class folder 'cat'" in events[-1]["message"]
