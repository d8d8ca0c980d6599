import threading

from straightline_inference.adapter import supervisor as supervision
from straightline_inference.adapter.supervisor import Problem, Supervisor
from tests.support.waiting import wait_until


class Server:
    """A server whose probe answers from a list of problems, then well."""

    def __init__(self, problems, failing_restarts=0):
        self.problems = list(problems)
        self.failing_restarts = failing_restarts
        self.restarts = 0
        self.reasons_seen_while_restarting = []
        self.supervisor = None
        self.restarted = threading.Event()

    def probe(self):
        return self.problems.pop(0) if self.problems else None

    def restart(self):
        self.reasons_seen_while_restarting.append(self.supervisor.down_reason)
        if self.failing_restarts:
            self.failing_restarts -= 1
            raise RuntimeError("the port is taken")
        self.restarts += 1
        self.restarted.set()


def supervised(server, interval_s=0.01) -> Supervisor:
    server.supervisor = Supervisor(
        "test server", server.probe, server.restart, failures_to_restart=3, interval_s=interval_s
    )
    server.supervisor.start()
    return server.supervisor


def test_a_server_whose_process_exited_is_restarted_at_the_first_probe():
    server = Server([Problem("its process exited (-9)", certain=True)])
    supervisor = supervised(server)
    try:
        assert server.restarted.wait(5)
        assert server.reasons_seen_while_restarting == [
            "the test server cannot serve: its process exited (-9); restarting it"
        ]
        assert wait_until(lambda: supervisor.down_reason == "", timeout=5)
    finally:
        supervisor.stop()


def test_two_failed_probes_report_the_server_down_until_one_succeeds():
    recovered = threading.Event()
    probes = iter([Problem("did not answer in 1.0 s")] * 2)  # reported down at the second

    def probe():
        problem = next(probes, None)
        if problem is None:
            recovered.wait()  # the next probe succeeds only when the test says so
        return problem

    supervisor = Supervisor(
        "test server", probe, lambda: None, failures_to_restart=3, interval_s=0.01
    )
    supervisor.start()
    try:
        assert wait_until(lambda: supervisor.down_reason != "", timeout=5)
        assert "did not answer in 1.0 s" in supervisor.down_reason
        recovered.set()
        assert wait_until(lambda: supervisor.down_reason == "", timeout=5)
        assert supervisor.restarts == 0
    finally:
        recovered.set()
        supervisor.stop()


def test_one_or_two_slow_probes_are_load_three_in_a_row_are_a_hang():
    slow = Problem("the model server did not answer in 2.0 s")
    server = Server([slow, slow, None, slow, slow, None])
    supervisor = supervised(server)
    try:
        assert wait_until(lambda: not server.problems, timeout=5)
        assert not server.restarted.wait(0.1)
        server.problems = [slow, slow, slow]
        assert server.restarted.wait(5)
        assert server.restarts == 1
    finally:
        supervisor.stop()


def test_a_failed_restart_is_retried_after_a_backoff(monkeypatch):
    monkeypatch.setattr(supervision, "MIN_BACKOFF_S", 0.05)
    server = Server([Problem("gone", certain=True)], failing_restarts=2)
    supervisor = supervised(server)
    try:
        assert server.restarted.wait(5)
        assert len(server.reasons_seen_while_restarting) == 3  # two failures, then it started
        assert supervisor.restarts == 1 and supervisor.down_reason == ""
    finally:
        supervisor.stop()
