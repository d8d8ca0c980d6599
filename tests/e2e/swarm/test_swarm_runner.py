"""The devrunner's Swarm runner: a real devrunner process whose jobs are one-shot services on a
single-node swarm of this machine's engine. A training job runs as a service (no network, its
output followed through the service's logs, its epochs and model recorded) and leaves nothing;
a running job's service outlives a devrunner restart, is re-attached by its label, and a cancel
removes it."""

import pytest

from straightline.v1 import devrunner_pb2 as S
from straightline.v1 import devrunner_pb2_grpc
from tests.devrunner.test_service import (
    start_devrunner,
    submit,
    submit_training,
    train_spec,
    wait_state,
)
from tests.support.models import make_image_folders
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.tensorflow, pytest.mark.slow]
IMAGE = "straightline/trainer:dev"


def job_services(engine, job_id: str) -> list:
    return engine.services.list(filters={"label": f"straightline.job={job_id}"})


@pytest.mark.timeout(900)
def test_jobs_run_as_one_shot_services_and_leave_nothing(swarm, tmp_path, channels):
    make_image_folders(tmp_path / "colours")
    env = {"STRAIGHTLINE_DEVRUNNER_IMAGES": IMAGE}
    process = start_devrunner(tmp_path, "swarm-1", "swarm.sqlite", "swarm", env=env)
    try:
        stub = devrunner_pb2_grpc.DevRunnerServiceStub(channels(process.address))
        job, running = submit_training(stub, tmp_path, S.RUNNER_SWARM)
        if running.state == S.JOB_STATE_RUNNING:
            [service] = job_services(swarm, job.job_id)
            spec = service.attrs["Spec"]["TaskTemplate"]
            assert spec["RestartPolicy"]["Condition"] == "none"
            [network] = spec["Networks"]
            assert swarm.networks.get(network["Target"]).attrs["Internal"] is True
        done = wait_state(stub, job.job_id, {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED})
        assert done.state == S.JOB_STATE_SUCCEEDED, done.message
        assert done.model.name == "colours" and len(done.epochs) == 1
        assert job_services(swarm, job.job_id) == []
        assert swarm.networks.list(filters={"label": f"straightline.job={job.job_id}"}) == []

        # A restart re-attaches to a running job's service, which a cancel then removes.
        long = submit(stub, train_spec(tmp_path, epochs=50))
        wait_state(stub, long.job_id, {S.JOB_STATE_RUNNING})
        process.terminate()
        assert len(job_services(swarm, long.job_id)) == 1
        process = start_devrunner(tmp_path, "swarm-2", "swarm.sqlite", "swarm", env=env)
        stub = devrunner_pb2_grpc.DevRunnerServiceStub(channels(process.address))
        assert stub.GetJob(S.GetJobRequest(job_id=long.job_id)).job.state == S.JOB_STATE_RUNNING
        stub.CancelJob(S.CancelJobRequest(job_id=long.job_id))
        wait_state(stub, long.job_id, {S.JOB_STATE_CANCELLED}, timeout=60)
        assert job_services(swarm, long.job_id) == []
        assert wait_until(
            lambda: not swarm.networks.list(filters={"label": f"straightline.job={long.job_id}"}),
            timeout=60,
        )
    finally:
        process.terminate()
        jobs = {"label": "straightline.role=job"}
        for leftover in swarm.services.list(filters=jobs):
            leftover.remove()
    assert swarm.services.list(filters=jobs) == []
    assert wait_until(
        lambda: not swarm.containers.list(all=True, filters=jobs, ignore_removed=True), timeout=60
    )
    for network in swarm.networks.list(filters=jobs):
        network.remove()
