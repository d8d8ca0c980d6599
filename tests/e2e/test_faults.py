"""The fault suite (issue 16): the whole real stack (two placers, the Flask, Docker and serverless
adapters with their model servers, containers and Lambda environments) under an open loop of
real requests, while one part is killed, stopped or broken. Each scenario checks that no
client sees a failure while another platform has capacity, that the broken part is found and
healed, and that nothing is left behind; its figures are printed (and written as JSON to
$STRAIGHTLINE_FAULT_FIGURES when set) for docs/reliability.md."""

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import docker
import pytest

from scripts.localstack import set_policy
from straightline.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    placer_pb2,
    placer_pb2_grpc,
    types_pb2,
)
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.modelstore import MODEL_FILE, ModelStore
from straightline_common.processes import ServiceProcess
from straightline_inference.adapter.containers import free_ports
from tests.support.load import OpenLoop
from tests.support.models import image_bytes, make_classifier
from tests.support.procfs import children, state_of
from tests.support.stack import placer_process, wait_for_instances
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.tensorflow, pytest.mark.faults, pytest.mark.slow]
FLASK, DOCKER, SERVERLESS = (
    types_pb2.PLATFORM_FLASK,
    types_pb2.PLATFORM_DOCKER,
    types_pb2.PLATFORM_SERVERLESS,
)
OWNER_LABEL = "straightline.owner"
RATE_PER_S = 6
# Algorithm 1 steered to one platform, fallback on: what the scenario breaks serves first.
STEER = {
    # Never hot, never large: Flask while it has a free slot (line 11).
    FLASK: {"frequency_threshold_rps": 1000, "data_size_threshold_bytes": 5_000_000},
    # Every request larger than D: Docker (line 7).
    DOCKER: {"frequency_threshold_rps": 1000, "data_size_threshold_bytes": 1},
    # Always hot and small: serverless (line 3).
    SERVERLESS: {"frequency_threshold_rps": 0.01, "data_size_threshold_bytes": 5_000_000},
}
FIGURES: dict[str, dict] = {}


@dataclass
class Stack:
    placers: list[ServiceProcess]  # the first answers `stub`; adapters heartbeat to both
    start_placer: Callable[[int], ServiceProcess]  # the placer of that index again, same port
    stub: placer_pb2_grpc.PlacerServiceStub
    store: ModelStore
    adapters: dict
    start: dict  # platform -> () -> ServiceProcess, the same adapter again (same name)
    engine: docker.DockerClient
    channels: ExitStack
    adapter_stubs: dict = field(default_factory=dict)

    def status(self, platform) -> types_pb2.InstanceReport:
        address = self.adapters[platform].address
        if address not in self.adapter_stubs:
            channel = self.channels.enter_context(open_channel(address, Role.OPERATOR))
            self.adapter_stubs[address] = inference_pb2_grpc.InferenceServiceStub(channel)
        request = inference_pb2.GetStatusRequest()
        return self.adapter_stubs[address].GetStatus(request, timeout=5).report

    def containers(self, name: str) -> list:
        return self.engine.containers.list(
            all=True, filters={"label": f"{OWNER_LABEL}={name}"}, ignore_removed=True
        )

    def running(self, name: str) -> list:
        return [c for c in self.containers(name) if c.status == "running"]

    def live_platforms(self) -> list[int]:
        view = next(self.stub.WatchResources(placer_pb2.WatchResourcesRequest(), timeout=5))
        return [i.report.platform for i in view.instances]


ADAPTER_ARGS = {
    FLASK: ("flask", "--threads", "2"),
    DOCKER: (
        "docker",
        *("--name", "faults-docker", "--max-containers", "2", "--threads-per-container", "2"),
        *("--min-warm", "1", "--queue-limit", "8"),
    ),
    SERVERLESS: (
        "serverless",
        *("--name", "faults-serverless", "--concurrency", "2", "--min-warm", "2"),
        *("--runner", "container"),
    ),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, start_adapter, otlp_receiver):
    store = ModelStore(tmp_path_factory.mktemp("fault-models"))
    make_classifier(store, "tiny")
    workdir = tmp_path_factory.mktemp("fault-placers")
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    placers: list[ServiceProcess] = []

    def start_placer(index: int) -> ServiceProcess:
        placer = placer_process(
            workdir / f"placer-{index}-{len(placers)}",
            otlp_receiver.endpoint,
            *("--listen", addresses[index], "--heartbeat-timeout-s", "1"),
            *("--policy-file", str(workdir / "policy.json")),
        )
        placers.append(placer)
        return placer.wait_ready()

    engine = docker.from_env()
    with ExitStack() as channels:
        try:
            first, second = start_placer(0), start_placer(1)
            start = {
                platform: (
                    lambda args=args: start_adapter(
                        *args, placer=",".join(addresses), store=store.root
                    )
                )
                for platform, args in ADAPTER_ARGS.items()
            }
            adapters = {platform: begin() for platform, begin in start.items()}
            channel = channels.enter_context(open_channel(first.address, Role.OPERATOR))
            stub = placer_pb2_grpc.PlacerServiceStub(channel)
            wait_for_instances(stub, 3, timeout=120)
            yield Stack(
                [first, second], start_placer, stub, store, adapters, start, engine, channels
            )
        finally:
            for placer in placers:
                placer.terminate()
            for name in ("faults-docker", "faults-serverless"):
                for container in engine.containers.list(
                    all=True, filters={"label": f"{OWNER_LABEL}={name}"}, ignore_removed=True
                ):
                    container.remove(force=True)
            engine.close()
            write_figures()


def write_figures() -> None:
    figures_file = os.environ.get("STRAIGHTLINE_FAULT_FIGURES")
    if figures_file and FIGURES:
        with open(figures_file, "w") as out:
            json.dump(FIGURES, out, indent=1)


def request(model: str = "tiny") -> placer_pb2.InferRequest:
    return placer_pb2.InferRequest(
        model=types_pb2.ModelRef(name=model), payload=image_bytes(), content_type="image/jpeg"
    )


@contextmanager
def steered_load(stack: Stack, platform: int) -> Iterator[OpenLoop]:
    """Requests steered to `platform` (every one answered first, so no cold start remains
    from earlier scenarios), at RATE_PER_S while the scenario runs."""
    set_policy(stack.stub, fallback_enabled=True, **STEER[platform])
    for _ in range(3):
        assert stack.stub.Infer(request(), timeout=120).served_platform == platform
    with OpenLoop(stack.stub, RATE_PER_S, request(), timeout_s=20) as load:
        yield load


def record(scenario: str, load: OpenLoop, **figures) -> None:
    served = load.served()
    FIGURES[scenario] = {
        "sent": len(load.outcomes),
        "failed": len(load.failed()),
        "fell_back": sum(1 for answer in served if answer.fell_back),
        **{
            key: round(value, 2) if isinstance(value, float) else value
            for key, value in figures.items()
        },
    }
    print(f"\n{scenario}: {json.dumps(FIGURES[scenario])}")


def assert_no_client_failure(load: OpenLoop) -> None:
    failed = load.failed()
    assert len(load.outcomes) >= 10  # some before the fault, the rest through and after it
    assert failed == [], f"{len(failed)} of {len(load.outcomes)} failed: {failed[:3]}"


def seconds_until(condition, timeout: float) -> float:
    started = time.monotonic()
    assert wait_until(condition, timeout=timeout), "the stack did not recover"
    return time.monotonic() - started


# The Flask platform ----------------------------------------------------------------------------


def test_kill_9_of_the_flask_model_server(stack):
    adapter = stack.adapters[FLASK]
    with steered_load(stack, FLASK) as load:
        time.sleep(1)
        [server] = children(adapter.process.pid)
        os.kill(server, signal.SIGKILL)
        reported = seconds_until(lambda: stack.status(FLASK).unavailable_reason, timeout=5)
        restarted = reported + seconds_until(
            lambda: not stack.status(FLASK).unavailable_reason, timeout=30
        )
        time.sleep(3)
    assert_no_client_failure(load)
    assert state_of(server) == ""  # reaped
    assert reported < 2 and restarted < 10
    record(
        "kill -9 of the Flask model server", load, reported_s=reported, serving_again_s=restarted
    )


def test_sigstop_of_the_flask_model_server(stack):
    """A hung model server: found by its adapter's probes of its health listener, reported
    down, killed and replaced; requests on it when it hung fall back."""
    adapter = stack.adapters[FLASK]
    with steered_load(stack, FLASK) as load:
        time.sleep(1)
        [server] = children(adapter.process.pid)
        os.kill(server, signal.SIGSTOP)
        try:
            reported = seconds_until(lambda: stack.status(FLASK).unavailable_reason, timeout=10)
            replaced = reported + seconds_until(
                lambda: (
                    children(adapter.process.pid) - {server}
                    and not stack.status(FLASK).unavailable_reason
                ),
                timeout=60,
            )
        finally:
            if state_of(server):
                os.kill(server, signal.SIGKILL)
        time.sleep(2)
    assert_no_client_failure(load)
    assert state_of(server) == ""  # killed and reaped by its adapter
    record(
        "SIGSTOP of the Flask model server",
        load,
        reported_down_s=reported,
        serving_again_s=replaced,
    )


@pytest.mark.parametrize(
    "platform", [FLASK, DOCKER, SERVERLESS], ids=["flask", "docker", "serverless"]
)
def test_sigstop_of_an_adapter(stack, platform):
    adapter = stack.adapters[platform]
    name = types_pb2.Platform.Name(platform).removeprefix("PLATFORM_").capitalize()
    with steered_load(stack, platform) as load:
        time.sleep(1)
        adapter.process.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            out_of_view = seconds_until(lambda: platform not in stack.live_platforms(), timeout=10)
            time.sleep(2)
        finally:
            adapter.process.send_signal(signal.SIGCONT)
        back = seconds_until(lambda: platform in stack.live_platforms(), timeout=15)
        time.sleep(1)
    assert_no_client_failure(load)
    assert out_of_view < 3  # the heartbeat timeout (1 s) and a sweep, on a loaded machine
    record(
        f"SIGSTOP of the {name} adapter, SIGCONT after 2 s",
        load,
        out_of_view_s=out_of_view,
        back_in_view_after_sigcont_s=back,
        stopped_for_s=time.monotonic() - stopped,
    )


# The Docker platform ---------------------------------------------------------------------------


def test_docker_kill_of_a_model_server_container(stack):
    with steered_load(stack, DOCKER) as load:
        time.sleep(1)
        [victim, *_] = stack.running("faults-docker")
        victim.kill()
        replaced = seconds_until(
            lambda: (
                [c.id for c in stack.running("faults-docker")] not in ([], [victim.id])
                and victim.id not in [c.id for c in stack.containers("faults-docker")]
            ),
            timeout=60,
        )
        time.sleep(3)
    assert_no_client_failure(load)
    assert len(stack.running("faults-docker")) >= 1
    record("docker kill of a model-server container", load, replaced_s=replaced)


def test_a_paused_model_server_container(stack):
    """`docker pause`: a container that hangs. A request on it costs one attempt (half of what
    is left of its 20 s deadline) and falls back; its adapter's probe finds it hung."""
    with steered_load(stack, DOCKER) as load:
        time.sleep(1)
        [victim, *_] = stack.running("faults-docker")
        victim.pause()
        paused = time.monotonic()
        try:
            time.sleep(12)  # longer than an attempt may wait (half of the 20 s deadline)
        finally:
            try:
                victim.reload()
                if victim.status == "paused":
                    victim.unpause()
                removed = False
            except docker.errors.NotFound:
                removed = True  # its adapter found it hung and removed it
        time.sleep(2)
    assert_no_client_failure(load)
    waited = [
        a.attempts[0].duration.ToTimedelta().total_seconds()
        for a in load.served()
        if a.fell_back and a.attempts[0].platform == DOCKER
    ]
    record(
        "docker pause of a model-server container for 12 s",
        load,
        longest_failed_attempt_s=max(waited, default=0.0),
        removed_by_its_adapter=removed,
        paused_for_s=time.monotonic() - paused,
    )


def test_kill_9_of_the_docker_adapter_and_its_restart(stack):
    with steered_load(stack, DOCKER) as load:
        time.sleep(1)
        stack.adapters[DOCKER].process.kill()
        stack.adapters[DOCKER].process.wait()
        killed = time.monotonic()
        out_of_view = seconds_until(lambda: DOCKER not in stack.live_platforms(), timeout=10)
        left = stack.containers("faults-docker")
        stack.adapters[DOCKER] = stack.start[DOCKER]()
        back = time.monotonic() - killed
        time.sleep(3)
    assert_no_client_failure(load)
    assert left, "the killed adapter's containers were expected to outlive it"
    now = {c.id for c in stack.containers("faults-docker")}
    assert not now & {c.id for c in left}, "the restarted adapter kept its predecessor's containers"
    record(
        "kill -9 of the Docker adapter, restarted",
        load,
        out_of_view_s=out_of_view,
        serving_again_s=back,
        left_behind=len(now & {c.id for c in left}),
    )


def test_model_files_removed_then_restored(stack):
    version = stack.store.resolve("tiny")
    model_file = version.directory / MODEL_FILE
    away = model_file.with_suffix(".away")
    with steered_load(stack, DOCKER) as load:
        time.sleep(1)
        model_file.rename(away)
        try:
            # A new container must load the model from the store: it cannot, and answers
            # FAILED_PRECONDITION; the placer serves those requests elsewhere.
            for container in stack.running("faults-docker"):
                container.kill()
            time.sleep(6)
        finally:
            away.rename(model_file)
        restored = seconds_until(
            lambda: stack.stub.Infer(request(), timeout=20).served_platform == DOCKER,
            timeout=60,
        )
    assert_no_client_failure(load)
    answers = load.served()
    assert any(a.fell_back for a in answers), "no request met the broken cold start"
    assert any(
        "cannot be loaded" in attempt.status_message for a in answers for attempt in a.attempts
    )
    record("a model's file removed, restored after 6 s", load, docker_serving_again_s=restored)


# The serverless platform -----------------------------------------------------------------------


def test_kill_of_a_lambda_environment(stack):
    with steered_load(stack, SERVERLESS) as load:
        time.sleep(1)
        [victim, *_] = stack.running("faults-serverless")
        victim.kill()
        refilled = seconds_until(
            lambda: (
                len(stack.running("faults-serverless")) == 2
                and victim.id not in [c.id for c in stack.containers("faults-serverless")]
            ),
            timeout=60,
        )
        time.sleep(3)
    assert_no_client_failure(load)
    record("docker kill of a Lambda environment", load, min_warm_refilled_s=refilled)


def test_a_paused_lambda_environment(stack):
    """`docker pause` of a Lambda environment: a request on it costs one attempt and falls
    back; its adapter's probe finds it hung, removes it and starts another."""
    with steered_load(stack, SERVERLESS) as load:
        time.sleep(1)
        [victim, *_] = stack.running("faults-serverless")
        victim.pause()
        try:
            removed = seconds_until(
                lambda: victim.id not in [c.id for c in stack.containers("faults-serverless")],
                timeout=30,
            )
        finally:
            try:
                victim.reload()
                if victim.status == "paused":
                    victim.unpause()
            except docker.errors.NotFound:
                pass
        refilled = removed + seconds_until(
            lambda: len(stack.running("faults-serverless")) == 2, timeout=60
        )
        time.sleep(2)
    assert_no_client_failure(load)
    record(
        "docker pause of a Lambda environment",
        load,
        removed_by_its_adapter_s=removed,
        min_warm_refilled_s=refilled,
    )


# The placers ------------------------------------------------------------------------------------


def test_kill_9_of_one_placer_of_two_and_its_return(stack):
    """Clients balance over both placers (round robin, UNAVAILABLE retried on the other); one is
    killed under load and started again on its port, from the policy file the other wrote."""
    first, second = (placer.address for placer in stack.placers)
    steered = set_policy(stack.stub, fallback_enabled=True, **STEER[FLASK])
    with ExitStack() as channels:

        def stub_of(target: str) -> placer_pb2_grpc.PlacerServiceStub:
            channel = channels.enter_context(open_channel(target, Role.OPERATOR))
            return placer_pb2_grpc.PlacerServiceStub(channel)

        def policy_of(stub: placer_pb2_grpc.PlacerServiceStub) -> placer_pb2.Policy:
            return stub.GetPolicy(placer_pb2.GetPolicyRequest(), timeout=5).policy

        assert wait_until(lambda: policy_of(stub_of(second)) == steered, timeout=5)
        with OpenLoop(stub_of(f"{first},{second}"), RATE_PER_S, request(), timeout_s=20) as load:
            time.sleep(2)
            stack.placers[1].process.kill()
            stack.placers[1].process.wait()
            time.sleep(4)
            stack.placers[1] = stack.start_placer(1)
            back = stub_of(second)
            in_view = seconds_until(lambda: len(wait_for_instances(back, 3, 15).instances), 20)
            time.sleep(2)
        assert_no_client_failure(load)
        assert policy_of(back) == steered, "the restarted placer lost the run-time policy"
    record(
        "kill -9 of one placer of two, back on its port after 4 s",
        load,
        adapters_in_new_view_s=in_view,
    )


def test_kill_9_of_every_placer_and_the_return_of_one(stack):
    """No placer runs for 3 s: a request sent then waits for one within its deadline (the
    service config's waitForReady), and is served as soon as one is back."""
    first, second = (placer.address for placer in stack.placers)
    set_policy(stack.stub, fallback_enabled=True, **STEER[FLASK])
    with open_channel(f"{first},{second}", Role.OPERATOR) as channel:
        stub = placer_pb2_grpc.PlacerServiceStub(channel)
        with OpenLoop(stub, RATE_PER_S, request(), timeout_s=20) as load:
            time.sleep(2)
            for placer in stack.placers:
                placer.process.kill()
                placer.process.wait()
            killed = time.monotonic()
            time.sleep(3)
            stack.placers[0] = stack.start_placer(0)
            returned = time.monotonic()
            time.sleep(4)
    stack.placers[1] = stack.start_placer(1)
    wait_for_instances(stack.stub, 3, timeout=30)
    assert_no_client_failure(load)
    waited = [o.done - returned for o in load.outcomes if killed <= o.sent <= returned]
    assert waited, "no request was sent while no placer ran"
    record(
        "kill -9 of both placers, one back after 3 s",
        load,
        sent_while_none_ran=len(waited),
        first_served_after_return_s=min(waited),
        last_served_after_return_s=max(waited),
    )


def test_nothing_is_left_behind_once_the_adapters_stop(stack):
    for platform in (DOCKER, SERVERLESS):
        stack.adapters[platform].terminate(timeout=60)
    assert stack.containers("faults-docker") == stack.containers("faults-serverless") == []
