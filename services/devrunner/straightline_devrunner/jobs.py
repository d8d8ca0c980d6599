"""Job records and their event history, kept in SQLite so that they outlive the devrunner.

Every job has a row (its spec and state as protobuf bytes) and an append-only list of events
(state changes, log lines, epochs, progress) that WatchJob replays and then follows.
"""

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf import timestamp_pb2

from straightline.v1 import devrunner_pb2
from straightline_common.errors import NotFound

FINISHED = frozenset(
    {
        devrunner_pb2.JOB_STATE_SUCCEEDED,
        devrunner_pb2.JOB_STATE_FAILED,
        devrunner_pb2.JOB_STATE_CANCELLED,
        devrunner_pb2.JOB_STATE_TIMED_OUT,
        devrunner_pb2.JOB_STATE_LOST,
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, created REAL NOT NULL, job BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL, sequence INTEGER NOT NULL, event BLOB NOT NULL,
    PRIMARY KEY (job_id, sequence));
"""


def now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


class JobStore:
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._changed = threading.Condition()

    def create(self, spec: devrunner_pb2.JobSpec, kind: devrunner_pb2.JobKind) -> devrunner_pb2.Job:
        job = devrunner_pb2.Job(
            job_id=uuid.uuid4().hex[:12],
            kind=kind,
            spec=spec,
            state=devrunner_pb2.JOB_STATE_QUEUED,
            create_time=now(),
        )
        with self._changed:
            self._db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?)",
                (job.job_id, time.time(), job.SerializeToString()),
            )
        self.append(job.job_id, state_change=devrunner_pb2.StateChange(state=job.state))
        return job

    def get(self, job_id: str) -> devrunner_pb2.Job:
        row = self._db.execute("SELECT job FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id!r}; ListJobs shows the jobs there are")
        return devrunner_pb2.Job.FromString(row[0])

    def save(self, job: devrunner_pb2.Job) -> None:
        with self._changed:
            self._db.execute(
                "UPDATE jobs SET job = ? WHERE job_id = ?", (job.SerializeToString(), job.job_id)
            )
            self._changed.notify_all()

    def set_state(
        self,
        job_id: str,
        state: devrunner_pb2.JobState,
        message: str,
        *,
        started: bool = False,
        ended: bool = False,
    ) -> None:
        """Records a state change as an event and on the job (with its start or end time)."""
        self.append(job_id, state_change=devrunner_pb2.StateChange(state=state, message=message))
        job = self.get(job_id)
        job.state, job.message = state, message
        if started:
            job.start_time.CopyFrom(now())
        if ended:
            job.end_time.CopyFrom(now())
        self.save(job)

    def passed_verification(self, name: str, version: str) -> bool:
        """Whether a verify job of this model version has succeeded and passed."""
        verifications, _ = self.page(
            0, 1_000_000, devrunner_pb2.JOB_KIND_VERIFY, devrunner_pb2.JOB_STATE_SUCCEEDED
        )
        return any(
            j.passed and (j.model.name, j.model.version) == (name, version) for j in verifications
        )

    def page(
        self, offset: int, limit: int, kind: int = 0, state: int = 0
    ) -> tuple[list[devrunner_pb2.Job], bool]:
        """Newest first; returns (jobs, whether more follow)."""
        rows = self._db.execute("SELECT job FROM jobs ORDER BY created DESC, job_id").fetchall()
        jobs = [devrunner_pb2.Job.FromString(row[0]) for row in rows]
        jobs = [j for j in jobs if (not kind or j.kind == kind) and (not state or j.state == state)]
        return jobs[offset : offset + limit], len(jobs) > offset + limit

    def all(self) -> list[devrunner_pb2.Job]:
        rows = self._db.execute("SELECT job FROM jobs").fetchall()
        return [devrunner_pb2.Job.FromString(row[0]) for row in rows]

    def unfinished(self) -> list[devrunner_pb2.Job]:
        return [job for job in self.all() if job.state not in FINISHED]

    def last_event_time(self, job_id: str) -> float:
        """When the job's last event was recorded, in seconds since the epoch."""
        row = self._db.execute(
            "SELECT event FROM events WHERE job_id = ? ORDER BY sequence DESC LIMIT 1", (job_id,)
        ).fetchone()
        if row is None:
            return 0.0
        return devrunner_pb2.WatchJobResponse.FromString(row[0]).time.ToNanoseconds() / 1e9

    def append(self, job_id: str, **event: Any) -> None:
        """Adds one event (a field of WatchJobResponse's `event` oneof) to the job's history."""
        with self._changed:
            (last,) = self._db.execute(
                "SELECT COALESCE(MAX(sequence), 0) FROM events WHERE job_id = ?", (job_id,)
            ).fetchone()
            message = devrunner_pb2.WatchJobResponse(
                job_id=job_id, sequence=last + 1, time=now(), **event
            )
            self._db.execute(
                "INSERT INTO events VALUES (?, ?, ?)",
                (job_id, last + 1, message.SerializeToString()),
            )
            self._changed.notify_all()

    def follow(
        self, job_id: str, is_active: Callable[[], bool]
    ) -> Iterator[devrunner_pb2.WatchJobResponse]:
        """The job's history from the start, then its new events, until it has finished (or
        `is_active()` turns false)."""
        self.get(job_id)
        seen = 0
        while is_active():
            # State first: a job's last event is written before it is marked finished, so
            # once finished is seen, the rows read next hold every event.
            finished = self.get(job_id).state in FINISHED
            rows = self._db.execute(
                "SELECT sequence, event FROM events WHERE job_id = ? AND sequence > ? "
                "ORDER BY sequence",
                (job_id, seen),
            ).fetchall()
            for sequence, event in rows:
                seen = sequence
                yield devrunner_pb2.WatchJobResponse.FromString(event)
            if finished and not rows:
                return
            if not rows:
                with self._changed:
                    self._changed.wait(timeout=0.5)
