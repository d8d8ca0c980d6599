"""Package jobs: a verified model version's images built (`packaging.py`), and the version
published to the model store's S3 location when it has one."""

import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from straightline.v1 import devrunner_pb2, types_pb2
from straightline_common.errors import FailedPrecondition, InvalidArgument, ServiceError
from straightline_common.modelstore import ModelStore, ModelVersion
from straightline_devrunner.jobs import JobStore
from straightline_devrunner.packaging import package

tracer = trace.get_tracer("straightline.devrunner")
_BUILT = {types_pb2.PLATFORM_DOCKER: "docker", types_pb2.PLATFORM_SERVERLESS: "serverless"}


class PackageJobs:
    def __init__(self, jobs: JobStore, store: ModelStore, engine: Any) -> None:
        self._jobs = jobs
        self._store = store
        self._engine = engine  # a Docker client (builds images); None without an engine

    def submit(self, spec: devrunner_pb2.JobSpec) -> devrunner_pb2.Job:
        if self._engine is None:
            raise FailedPrecondition(
                "packaging builds images and needs a Docker engine; none "
                "is reachable from this devrunner"
            )
        version = self._store.resolve(spec.package.model.name, spec.package.model.version)
        if not self._jobs.passed_verification(version.name, version.version):
            raise FailedPrecondition(
                f"model {version.name}:{version.version} has no passed verification; run a "
                "verify job on it first"
            )
        wanted = list(spec.package.platforms) or list(_BUILT)
        if any(p not in (*_BUILT, types_pb2.PLATFORM_FLASK) for p in wanted):
            raise InvalidArgument("platforms must be FLASK, DOCKER or SERVERLESS")
        job = self._jobs.create(spec, devrunner_pb2.JOB_KIND_PACKAGE)
        job.model.CopyFrom(types_pb2.ModelRef(name=version.name, version=version.version))
        self._jobs.save(job)
        platforms = [_BUILT[p] for p in wanted if p in _BUILT]
        threading.Thread(
            target=self._run, args=(job.job_id, version, platforms), daemon=True
        ).start()
        return job

    def _run(self, job_id: str, version: ModelVersion, platforms: list[str]) -> None:
        with tracer.start_as_current_span(
            "devrunner.package", attributes={"straightline.job_id": job_id}
        ):
            self._jobs.set_state(job_id, devrunner_pb2.JOB_STATE_RUNNING, "building", started=True)
            try:
                images = package(self._engine, version, platforms, on_line=self._build_log(job_id))
                uri = self._publish(job_id, version)
            except ServiceError as error:
                self._jobs.set_state(job_id, devrunner_pb2.JOB_STATE_FAILED, str(error), ended=True)
                return
            job = self._jobs.get(job_id)
            job.images.update(images)
            job.model_uri = uri
            self._jobs.save(job)
            self._jobs.set_state(
                job_id,
                devrunner_pb2.JOB_STATE_SUCCEEDED,
                "the version is servable: the model store holds it for Flask, "
                "and its images are built" + (f"; published to {uri}" if uri else ""),
                ended=True,
            )

    def _build_log(self, job_id: str) -> Callable[[str], None]:
        def on_line(text: str) -> None:
            self._jobs.append(job_id, log=devrunner_pb2.LogLine(stream="build", text=text))

        return on_line

    def _publish(self, job_id: str, version: ModelVersion) -> str:
        """Copies the version to the store's S3 location, if it has one; returns where."""
        if self._store.remote is None:
            return ""
        uri = self._store.publish(version)
        self._build_log(job_id)(f"published {uri}")
        return uri
