"""The devrunner service as a real process (local runner: jobs as processes), over gRPC."""

import subprocess
import sys
import time
import urllib.request

import grpc
import pytest

from scripts.localstack import set_policy
from straightline.v1 import (
    devrunner_pb2,
    devrunner_pb2_grpc,
    placer_pb2,
    placer_pb2_grpc,
    types_pb2,
)
from straightline_common.processes import ServiceProcess, health_status
from tests.support.callers import caller_channel
from tests.support.fuzzing import assert_fuzzed_answers_are_actionable
from tests.support.models import make_image_folders
from tests.support.otlp import assert_job_trace
from tests.support.procfs import children, state_of
from tests.support.s3 import BUCKET
from tests.support.stack import (
    adapter_process,
    placer_process,
    tracing_env,
    wait_for_instances,
)
from tests.support.waiting import wait_until

S3_URL = f"s3://{BUCKET}/devrunner"
S = devrunner_pb2


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("devrunner")
    make_image_folders(path / "colours")
    for empty_class in ("cat", "dog"):  # a dataset the trainer refuses
        (path / "broken" / empty_class).mkdir(parents=True)
    return path


def start_devrunner(workdir, name, state, runner="local", otlp_endpoint="", env=None):
    return ServiceProcess(
        "straightline_devrunner",
        [
            "--listen",
            "127.0.0.1:0",
            "--runner",
            runner,
            "--store",
            str(workdir / "models"),
            "--datasets",
            str(workdir),
            "--state",
            str(workdir / state),
        ],
        workdir / name,
        env={**(tracing_env(otlp_endpoint) if otlp_endpoint else {}), **(env or {})},
    ).wait_ready(60)


@pytest.fixture(scope="module")
def devrunner(workdir, otlp_receiver, s3_endpoint):
    """The devrunner, publishing packaged versions to S3_URL."""
    process = start_devrunner(
        workdir,
        "devrunner",
        "jobs.sqlite",
        otlp_endpoint=otlp_receiver.endpoint,
        env={**s3_endpoint.env(), "STRAIGHTLINE_MODEL_S3_URL": S3_URL},
    )
    yield process
    process.terminate()


@pytest.fixture
def stub(devrunner, channels):
    return devrunner_pb2_grpc.DevRunnerServiceStub(channels(devrunner.address))


def train_spec(workdir, epochs=1, **options):
    return S.JobSpec(
        train=S.TrainSpec(
            dataset_path="colours",
            model_name="colours",
            input_size=71,
            epochs=epochs,
            batch_size=8,
        ),
        resources=S.Resources(allow_cpu_fallback=True),
        **options,
    )


def submit(stub, spec):
    return stub.SubmitJob(S.SubmitJobRequest(spec=spec), timeout=30).job


def wait_state(stub, job_id, states, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stub.GetJob(S.GetJobRequest(job_id=job_id)).job
        if job.state in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {states}: {job}")


def submit_training(stub, workdir, runner: int) -> tuple[S.Job, S.Job]:
    """A one-epoch training job, checked to run on `runner`, and as first seen running (or
    already ended)."""
    job = submit(stub, train_spec(workdir))
    assert job.runner == runner
    started = {S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED}
    return job, wait_state(stub, job.job_id, started)


def a_trained_job(stub, workdir) -> S.Job:
    """A succeeded training job of this module's devrunner: one an earlier test made, else a
    new one, so that a test that needs one also runs alone."""
    request = S.ListJobsRequest(kind=S.JOB_KIND_TRAIN, state=S.JOB_STATE_SUCCEEDED)
    for job in stub.ListJobs(request).jobs:
        return job
    job = submit(stub, train_spec(workdir))
    return wait_state(stub, job.job_id, {S.JOB_STATE_SUCCEEDED})


def a_passed_verification(stub, workdir) -> S.Job:
    """A verify job that passed: one an earlier test made, else a new one of a trained model."""
    request = S.ListJobsRequest(kind=S.JOB_KIND_VERIFY, state=S.JOB_STATE_SUCCEEDED)
    for job in stub.ListJobs(request).jobs:
        if job.passed:
            return job
    model = a_trained_job(stub, workdir).model
    spec = S.VerifySpec(model=model, dataset_path="colours", accuracy_threshold=0.8)
    job = submit(stub, S.JobSpec(verify=spec))
    verified = wait_state(stub, job.job_id, {S.JOB_STATE_SUCCEEDED})
    assert verified.passed, verified.results
    return verified


@pytest.mark.parametrize(
    ("spec", "caller", "code", "message"),
    [
        (S.JobSpec(), "operator", grpc.StatusCode.INVALID_ARGUMENT, "no train, verify or package"),
        (None, "nobody", grpc.StatusCode.UNAUTHENTICATED, "SubmitJob needs credentials"),
        (None, "forger", grpc.StatusCode.UNAUTHENTICATED, "SubmitJob needs credentials"),
        (
            None,
            "client",
            grpc.StatusCode.PERMISSION_DENIED,
            "is for operator; this caller is client",
        ),
        (
            "image",
            "operator",
            grpc.StatusCode.PERMISSION_DENIED,
            "not on the devrunner's allow-list",
        ),
        ("dataset", "operator", grpc.StatusCode.NOT_FOUND, "does not exist"),
        ("epochs", "operator", grpc.StatusCode.INVALID_ARGUMENT, "epochs must be between 1"),
        ("gpu", "operator", grpc.StatusCode.FAILED_PRECONDITION, "this host has none"),
        ("labels", "operator", grpc.StatusCode.INVALID_ARGUMENT, "at most 32 labels"),
        ("../../etc", "operator", grpc.StatusCode.INVALID_ARGUMENT, "outside its directory"),
        ("/", "operator", grpc.StatusCode.INVALID_ARGUMENT, "not absolute"),
        ("nan split", "operator", grpc.StatusCode.INVALID_ARGUMENT, "validation_split must be"),
        ("negative rate", "operator", grpc.StatusCode.INVALID_ARGUMENT, "learning_rate must be"),
        ("huge size", "operator", grpc.StatusCode.INVALID_ARGUMENT, "input_size must be"),
        ("nan cpus", "operator", grpc.StatusCode.INVALID_ARGUMENT, "resources.cpus must be"),
        (
            "model",
            "operator",
            grpc.StatusCode.NOT_FOUND,
            "model 'absent' is not in the model store",
        ),
    ],
)
def test_bad_job_specs_are_refused(devrunner, channels, workdir, spec, caller, code, message):
    good = train_spec(workdir)
    if spec is None:
        spec = good
    elif spec == "image":
        spec = train_spec(workdir, image="evil/miner:latest")
    elif spec == "dataset":
        good.train.dataset_path = "nowhere"
        spec = good
    elif spec == "epochs":
        good.train.epochs = 2**32 - 1
        spec = good
    elif spec == "labels":
        spec = train_spec(workdir, labels={f"k{i}": "v" for i in range(33)})
    elif spec in ("../../etc", "/"):
        good.train.dataset_path = spec
        spec = good
    elif spec == "nan split":
        good.train.validation_split = float("nan")
        spec = good
    elif spec == "negative rate":
        good.train.learning_rate = -0.1
        spec = good
    elif spec == "huge size":
        good.train.input_size = 2**32 - 1
        spec = good
    elif spec == "nan cpus":
        spec = S.JobSpec(train=good.train, resources=S.Resources(cpus=float("nan")))
    elif spec == "gpu":
        spec = S.JobSpec(train=good.train, resources=S.Resources(gpus=1))
    elif spec == "model":
        spec = S.JobSpec(
            verify=S.VerifySpec(model=types_pb2.ModelRef(name="absent"), dataset_path="colours")
        )
    stub = devrunner_pb2_grpc.DevRunnerServiceStub(caller_channel(channels, devrunner, caller))
    with pytest.raises(grpc.RpcError) as refused:
        submit(stub, spec)
    assert refused.value.code() == code
    assert message in refused.value.details()


@pytest.mark.tensorflow
def test_train_watch_verify_list_and_replay(stub, workdir, otlp_receiver):
    job = submit(stub, train_spec(workdir))
    assert job.state == S.JOB_STATE_QUEUED and job.runner == S.RUNNER_LOCAL
    assert job.resources.gpus == 0  # CPU fallback on a host without GPUs
    events = list(stub.WatchJob(S.WatchJobRequest(job_id=job.job_id), timeout=300))
    states = [e.state_change.state for e in events if e.HasField("state_change")]
    assert states == [S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED]
    epochs = [e.epoch for e in events if e.HasField("epoch")]
    assert [e.epoch for e in epochs] == [1] and epochs[0].loss > 0
    assert any(e.HasField("progress") for e in events)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    done = stub.GetJob(S.GetJobRequest(job_id=job.job_id)).job
    assert done.state == S.JOB_STATE_SUCCEEDED and done.model.name == "colours"
    assert "val_accuracy" in done.results and len(done.epochs) == 1
    job_span = assert_job_trace(
        otlp_receiver, done.trace_id, ("load_dataset", "build_model", "fit", "save"), epochs=1
    )
    assert job_span.attributes["straightline.job_id"] == job.job_id

    replay = list(stub.WatchJob(S.WatchJobRequest(job_id=job.job_id), timeout=30))
    assert [e.sequence for e in replay] == [e.sequence for e in events]

    verify = submit(
        stub,
        S.JobSpec(
            verify=S.VerifySpec(model=done.model, dataset_path="colours", accuracy_threshold=0.8)
        ),
    )
    verified = wait_state(stub, verify.job_id, {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED})
    assert verified.state == S.JOB_STATE_SUCCEEDED and verified.passed
    assert 0.8 <= verified.results["accuracy"] <= 1

    listed = stub.ListJobs(S.ListJobsRequest(page_size=1)).jobs
    assert [j.job_id for j in listed] == [verify.job_id]
    trains = stub.ListJobs(S.ListJobsRequest(kind=S.JOB_KIND_TRAIN)).jobs
    assert job.job_id in {j.job_id for j in trains}


@pytest.mark.docker
@pytest.mark.tensorflow
def test_package_a_verified_version_and_serve_it_through_the_placer(
    stub, workdir, otlp_receiver, channels, s3_endpoint
):
    import docker

    from straightline_common.modelstore import ModelStore
    from tests.support.models import make_classifier

    make_classifier(ModelStore(workdir / "models"), "unverified")
    with pytest.raises(grpc.RpcError) as refused:
        submit(stub, S.JobSpec(package=S.PackageSpec(model=types_pb2.ModelRef(name="unverified"))))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no passed verification" in refused.value.details()

    verified = a_passed_verification(stub, workdir)
    job = submit(stub, S.JobSpec(package=S.PackageSpec(model=verified.model)))
    done = wait_state(stub, job.job_id, {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED})
    assert done.state == S.JOB_STATE_SUCCEEDED, done.message
    tag = f"{verified.model.name}-{verified.model.version}"
    assert dict(done.images) == {
        "docker": f"straightline/model-server:{tag}",
        "serverless": f"straightline/lambda:{tag}",
    }
    where = f"{verified.model.name}/{verified.model.version}/"
    assert done.model_uri == f"{S3_URL}/{where}"
    assert s3_endpoint.keys(f"devrunner/{where}") == [
        f"devrunner/{where}metadata.json",
        f"devrunner/{where}model.h5",
    ]
    engine = docker.from_env()
    try:
        listing = engine.containers.run(
            done.images["docker"],
            entrypoint=["ls"],
            remove=True,
            network_mode="none",
            command=[f"/models/{verified.model.name}/{verified.model.version}"],
        )
        assert b"model.h5" in listing and b"metadata.json" in listing
        answers = top_classes_through_the_placer(
            workdir, verified.model, done.images, otlp_receiver.endpoint, channels
        )
        assert answers[types_pb2.PLATFORM_FLASK] == answers[types_pb2.PLATFORM_DOCKER]
        assert answers[types_pb2.PLATFORM_FLASK] == answers[types_pb2.PLATFORM_SERVERLESS]
    finally:
        for image in done.images.values():
            engine.images.remove(image)
        engine.close()


def top_classes_through_the_placer(workdir, model, images, otlp_endpoint, channels):
    """Serves the packaged version: Flask from the model store, Docker and serverless from
    the version's own images (the store is not mounted, so the image must carry the model);
    one image pinned to each platform in turn; returns the classes by platform."""
    store = workdir / "models"
    started = []
    try:
        placer = placer_process(workdir / "placer", otlp_endpoint)
        started.append(placer)
        placer.wait_ready()
        adapters = {
            "flask": ["--threads", "1"],
            "docker": ["--image", images["docker"], "--models-in-image", "true"],
            "serverless": ["--image", images["serverless"], "--models-in-image", "true"],
        }
        for platform, args in adapters.items():
            started.append(
                adapter_process(
                    workdir / platform,
                    platform,
                    store,
                    otlp_endpoint,
                    *args,
                    placer=placer.address,
                )
            )
        for adapter in started[1:]:
            adapter.wait_ready(120)
        placer_stub = placer_pb2_grpc.PlacerServiceStub(channels(placer.address))
        wait_for_instances(placer_stub, 3)
        picture = next((workdir / "colours" / "blue").iterdir()).read_bytes()
        answers = {}
        for platform in (
            types_pb2.PLATFORM_FLASK,
            types_pb2.PLATFORM_DOCKER,
            types_pb2.PLATFORM_SERVERLESS,
        ):
            set_policy(placer_stub, pinned_platform=platform)
            answer = placer_stub.Infer(
                placer_pb2.InferRequest(
                    model=model, payload=picture, content_type="image/png", top_k=3
                ),
                timeout=120,
            )
            assert answer.served_platform == platform
            assert (answer.model.name, answer.model.version) == (model.name, model.version)
            answers[platform] = [(c.label, round(c.score, 4)) for c in answer.classes]
        return answers
    finally:
        for process in reversed(started):
            process.terminate(60)


def cli(devrunner, *args):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "straightline_devrunner.cli",
            "--devrunner",
            devrunner.address,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.tensorflow
def test_cli_lists_jobs_and_draws_learning_curves(devrunner, stub, workdir, tmp_path):
    trained = a_trained_job(stub, workdir)
    listing = cli(devrunner, "list")
    assert listing.returncode == 0
    assert listing.stdout.splitlines()[0].split()[:3] == ["JOB", "KIND", "STATE"]
    row = next(line for line in listing.stdout.splitlines() if line.startswith(trained.job_id))
    model = f"{trained.model.name}:{trained.model.version}"
    assert row.split()[1:4] == ["train", "succeeded", model]
    curves = cli(devrunner, "curves", trained.job_id, "--png", str(tmp_path / "curves.png"))
    assert curves.returncode == 0 and "epoch 1: acc" in curves.stdout
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_shows_a_failing_job_and_refusals(devrunner, workdir):
    (workdir / "broken-cli" / "a").mkdir(parents=True)
    (workdir / "broken-cli" / "b").mkdir(parents=True)
    failed = cli(
        devrunner,
        "train",
        "--dataset",
        "broken-cli",
        "--model-name",
        "m",
        "--input-size",
        "71",
        "--cpu-fallback",
    )
    assert failed.returncode == 1
    assert "QUEUED" in failed.stdout and "FAILED the job exited with status 2" in failed.stdout
    refused = cli(devrunner, "train", "--dataset", "nowhere", "--model-name", "m")
    assert refused.returncode == 2 and "NOT_FOUND" in refused.stderr
    for outside in ("../..", "/etc", str(workdir / "broken-cli")):
        refused = cli(devrunner, "train", "--dataset", outside, "--model-name", "m")
        assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr


def test_cli_refuses_a_negative_count_and_an_unreadable_tokens_file(tmp_path, capsys):
    from straightline_devrunner.cli import main

    nowhere = ["--devrunner", "127.0.0.1:9"]
    with pytest.raises(SystemExit) as exited:
        main([*nowhere, "train", "--dataset", "d", "--model-name", "m", "--epochs", "-1"])
    assert exited.value.code == 2
    assert "argument --epochs: '-1': must be zero or more" in capsys.readouterr().err
    assert main([*nowhere, "--tokens-file", str(tmp_path / "missing"), "list"]) == 2
    assert f"no tokens file at {tmp_path / 'missing'}" in capsys.readouterr().err


def test_progress_line_shows_epoch_step_bar_and_time_left():
    from straightline_devrunner.cli import progress_line

    line = progress_line(
        S.StepProgress(epoch=2, step=5, steps=10, loss=0.5, accuracy=0.75),
        epochs=4,
        started=time.monotonic() - 10,
        done_steps=15,
        total_steps=40,
    )
    assert line.startswith("epoch 2/4 step 5/10 [############............]")
    assert "loss 0.5000 acc 0.750" in line
    assert line.endswith("left   17s")


@pytest.mark.tensorflow
def test_cancel_mid_training(stub, workdir):
    job = submit(stub, train_spec(workdir, epochs=50))
    wait_state(stub, job.job_id, {S.JOB_STATE_RUNNING})
    stub.CancelJob(S.CancelJobRequest(job_id=job.job_id))
    cancelled = wait_state(stub, job.job_id, {S.JOB_STATE_CANCELLED}, timeout=30)
    assert cancelled.end_time.seconds > 0
    with pytest.raises(grpc.RpcError) as again:
        stub.CancelJob(S.CancelJobRequest(job_id=job.job_id))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_failing_trainer_gives_failed_with_its_last_lines(stub, workdir):
    spec = train_spec(workdir)
    spec.train.dataset_path = "broken"
    job = submit(stub, spec)
    failed = wait_state(stub, job.job_id, {S.JOB_STATE_FAILED}, timeout=60)
    assert "exited with status 2" in failed.message
    assert "class folder 'cat'" in failed.message


def test_restart_keeps_finished_jobs_and_marks_running_ones_lost(workdir, channels):
    first = start_devrunner(workdir, "restart-1", state="restart.sqlite")
    stub = devrunner_pb2_grpc.DevRunnerServiceStub(channels(first.address))
    spec = train_spec(workdir)
    spec.train.dataset_path = "broken"
    finished = submit(stub, spec)
    wait_state(stub, finished.job_id, {S.JOB_STATE_FAILED}, timeout=60)
    running = submit(stub, train_spec(workdir, epochs=50))
    wait_state(stub, running.job_id, {S.JOB_STATE_RUNNING})
    first.terminate()
    second = start_devrunner(workdir, "restart-2", state="restart.sqlite")
    try:
        stub = devrunner_pb2_grpc.DevRunnerServiceStub(channels(second.address))
        assert stub.GetJob(S.GetJobRequest(job_id=running.job_id)).job.state == S.JOB_STATE_LOST
        replay = list(stub.WatchJob(S.WatchJobRequest(job_id=finished.job_id), timeout=30))
        assert replay[-1].state_change.state == S.JOB_STATE_FAILED
        # The metrics come from the records, so the restarted devrunner reports both jobs.
        url = f"http://127.0.0.1:{second.ports['metrics']}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        for state in ("failed", "lost"):
            assert f'straightline_devrunner_jobs{{kind="train",state="{state}"}} 1.0' in text
        assert (
            'straightline_devrunner_job_duration_seconds_count{kind="train",state="failed"}' in text
        )
    finally:
        second.terminate()


@pytest.mark.faults
@pytest.mark.parametrize(
    "runner",
    ["local", pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.tensorflow])],
)
def test_kill_9_of_the_devrunner_mid_job(workdir, channels, runner):
    """A local job dies with its devrunner and is LOST after the restart; a job in a container
    outlives it and is re-attached, then cancelled; nothing is left either way."""
    state = f"kill-{runner}.sqlite"
    first = start_devrunner(workdir, f"kill-{runner}-1", state, runner)
    stub = devrunner_pb2_grpc.DevRunnerServiceStub(channels(first.address))
    job = submit(stub, train_spec(workdir, epochs=50))
    wait_state(stub, job.job_id, {S.JOB_STATE_RUNNING})
    trainers = children(first.process.pid)
    first.process.kill()
    first.process.wait()
    first.terminate()
    second = start_devrunner(workdir, f"kill-{runner}-2", state, runner)
    try:
        stub = devrunner_pb2_grpc.DevRunnerServiceStub(channels(second.address))
        after = stub.GetJob(S.GetJobRequest(job_id=job.job_id)).job
        if runner == "local":
            assert after.state == S.JOB_STATE_LOST
            assert trainers, "the job's trainer was expected to be the devrunner's child"
            assert all(wait_until(lambda t=t: state_of(t) in ("", "Z")) for t in trainers)
        else:
            assert after.state == S.JOB_STATE_RUNNING
            stub.CancelJob(S.CancelJobRequest(job_id=job.job_id))
            wait_state(stub, job.job_id, {S.JOB_STATE_CANCELLED}, timeout=60)
            import docker

            engine = docker.from_env()
            try:
                assert job_containers(engine, job.job_id) == []
            finally:
                for leftover in job_containers(engine, job.job_id):
                    leftover.remove(force=True)
                engine.close()
    finally:
        second.terminate()


def job_containers(engine, job_id, all=True):
    return engine.containers.list(
        all=all, filters={"label": f"straightline.job={job_id}"}, ignore_removed=True
    )


@pytest.mark.docker
@pytest.mark.tensorflow
def test_jobs_in_containers_are_released_when_they_end(workdir, channels, otlp_receiver):
    import docker

    from straightline_common.timeconv import duration

    engine = docker.from_env()
    process = start_devrunner(
        workdir, "docker-1", "docker.sqlite", "docker", otlp_receiver.endpoint
    )
    try:
        stub = devrunner_pb2_grpc.DevRunnerServiceStub(channels(process.address))
        job, running = submit_training(stub, workdir, S.RUNNER_DOCKER)
        if running.state == S.JOB_STATE_RUNNING:
            [container] = job_containers(engine, job.job_id, all=False)
            assert container.attrs["HostConfig"]["NetworkMode"] == "none"
        done = wait_state(stub, job.job_id, {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED})
        assert done.state == S.JOB_STATE_SUCCEEDED, done.message
        assert done.model.name == "colours" and len(done.epochs) == 1
        assert_job_trace(otlp_receiver, done.trace_id, ("fit", "save"), epochs=1)

        timed = submit(stub, train_spec(workdir, epochs=50, timeout=duration(4)))
        ended = wait_state(
            stub,
            timed.job_id,
            {S.JOB_STATE_TIMED_OUT, S.JOB_STATE_FAILED, S.JOB_STATE_SUCCEEDED},
            timeout=60,
        )
        assert ended.state == S.JOB_STATE_TIMED_OUT, ended.message

        # A restart re-attaches to a running job's container, which a cancel then removes.
        long = submit(stub, train_spec(workdir, epochs=50))
        wait_state(stub, long.job_id, {S.JOB_STATE_RUNNING})
        process.terminate()
        assert len(job_containers(engine, long.job_id, all=False)) == 1
        process = start_devrunner(workdir, "docker-2", "docker.sqlite", "docker")
        stub = devrunner_pb2_grpc.DevRunnerServiceStub(channels(process.address))
        assert stub.GetJob(S.GetJobRequest(job_id=long.job_id)).job.state == S.JOB_STATE_RUNNING
        stub.CancelJob(S.CancelJobRequest(job_id=long.job_id))
        wait_state(stub, long.job_id, {S.JOB_STATE_CANCELLED}, timeout=60)
        for finished in (job, timed, long):
            assert job_containers(engine, finished.job_id) == []
    finally:
        process.terminate()
        for leftover in engine.containers.list(
            all=True, filters={"label": "straightline.role=job"}, ignore_removed=True
        ):
            leftover.remove(force=True)
        engine.close()


@pytest.mark.parametrize(
    ("method", "request_class", "shape"),
    [
        ("SubmitJob", S.SubmitJobRequest, "unary"),
        ("GetJob", S.GetJobRequest, "unary"),
        ("ListJobs", S.ListJobsRequest, "unary"),
        ("CancelJob", S.CancelJobRequest, "unary"),
        ("WatchJob", S.WatchJobRequest, "stream"),
    ],
)
def test_fuzzed_devrunner_requests_get_actionable_statuses(
    devrunner, channels, method, request_class, shape
):
    channel = channels(devrunner.address)

    assert_fuzzed_answers_are_actionable(
        channel, "straightline.v1.DevRunnerService", method, shape, request_class
    )
    assert health_status(devrunner.address) == 1
