"""The devrunner's Prometheus metrics, read from its job records."""

import time

from straightline.v1 import devrunner_pb2
from straightline_devrunner.jobs import JobStore
from straightline_devrunner.metrics import devrunner_metrics


def test_the_devrunner_reports_jobs_by_state_and_durations_from_its_records(tmp_path):
    jobs = JobStore(str(tmp_path / "jobs.sqlite"))
    spec = devrunner_pb2.JobSpec(train=devrunner_pb2.TrainSpec(dataset_path="d"))
    running, finished = (
        jobs.create(spec, devrunner_pb2.JOB_KIND_TRAIN),
        jobs.create(spec, devrunner_pb2.JOB_KIND_TRAIN),
    )
    for job in (running, finished):
        jobs.set_state(job.job_id, devrunner_pb2.JOB_STATE_RUNNING, "running", started=True)
    time.sleep(0.05)
    jobs.set_state(finished.job_id, devrunner_pb2.JOB_STATE_FAILED, "failed", ended=True)
    value = devrunner_metrics(jobs).get_sample_value
    for state in ("running", "failed"):
        assert value("straightline_devrunner_jobs", {"kind": "train", "state": state}) == 1
    failed = {"kind": "train", "state": "failed"}
    assert value("straightline_devrunner_job_duration_seconds_count", failed) == 1
    assert 0.05 <= value("straightline_devrunner_job_duration_seconds_sum", failed) < 5
    assert value("straightline_devrunner_job_duration_seconds_bucket", {**failed, "le": "1.0"}) == 1
