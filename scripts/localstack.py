"""StraightLine's services as local processes on loopback port 0, for the demo and the
evaluation harness: start them (each stopped by the caller's ExitStack), wait until the
placer's view holds the adapters that serve a model, pin or free the policy, warm up."""

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from google.protobuf import field_mask_pb2

from straightline.v1 import placer_pb2, types_pb2
from straightline_common.processes import ServiceProcess
from straightline_common.tls import TlsFiles, tls_flags

PLATFORM_NAMES = {
    types_pb2.PLATFORM_FLASK: "flask",
    types_pb2.PLATFORM_DOCKER: "docker",
    types_pb2.PLATFORM_SERVERLESS: "serverless",
}


def start_service(
    stack: ExitStack, module: str, args: list[str], workdir: Path, timeout: float = 60
) -> ServiceProcess:
    process = ServiceProcess(module, args, workdir)
    stack.callback(process.terminate, 60)
    return process.wait_ready(timeout)


def tls_arguments(certs: Path | None, identity: str) -> list[str]:
    """The flags that give a service its certificate from `certs` (devcerts' layout);
    none without certificates."""
    if certs is None:
        return []
    own = TlsFiles(certs / f"{identity}.pem", certs / f"{identity}.key", certs / "ca.pem")
    return tls_flags(own)


def start_placer(stack: ExitStack, workdir: Path, *args: str) -> ServiceProcess:
    return start_service(
        stack,
        "straightline_placer",
        ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", *args],
        workdir / "placer",
    )


def start_adapters(
    stack: ExitStack,
    placer: str,
    store: Path,
    workdir: Path,
    adapters: dict[str, list[str]],
    certs: Path | None = None,
) -> int:
    """One adapter per platform named in `adapters` (with its own arguments, and its
    certificate from `certs` when given), started side by side; returns how many."""
    common = ["--listen", "127.0.0.1:0", "--placer", placer, "--store", str(store)]
    processes = []
    for platform, args in adapters.items():
        process = ServiceProcess(
            "straightline_inference.adapter",
            ["--platform", platform, *common, *args, *tls_arguments(certs, f"adapter-{platform}")],
            workdir / f"adapter-{platform}",
        )
        stack.callback(process.terminate, 60)
        processes.append(process)
    for process in processes:
        process.wait_ready(180)
    return len(processes)


def serving_reports(stub, model: str, instances: int, timeout: float = 30) -> list:
    """The reports of the instances serving the model, once there are `instances` of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = stub.WatchResources(placer_pb2.WatchResourcesRequest(), timeout=5)
        try:
            latest = next(view)
        finally:
            view.cancel()
        serving = [i.report for i in latest.instances if model in {m.name for m in i.report.models}]
        if len(serving) >= instances:
            return serving
        time.sleep(0.3)
    raise SystemExit(f"only {len(serving)} of {instances} adapters serve {model}")


def set_policy(stub, **fields) -> placer_pb2.Policy:
    request = placer_pb2.UpdatePolicyRequest(
        policy=placer_pb2.Policy(**fields), update_mask=field_mask_pb2.FieldMask(paths=[*fields])
    )
    return stub.UpdatePolicy(request).policy


def warm_up(stub, model: str, reports, image: tuple[bytes, str]) -> None:
    """As a deployment does before taking traffic: every slot of every platform answers one
    request (pinned to it), so the version is loaded everywhere and no cold start is left."""
    payload, content_type = image
    request = placer_pb2.InferRequest(
        model=types_pb2.ModelRef(name=model), payload=payload, content_type=content_type
    )
    try:
        for report in reports:
            set_policy(stub, pinned_platform=report.platform)
            with ThreadPoolExecutor(report.capacity_total) as callers:
                calls = [
                    callers.submit(stub.Infer, request, timeout=180)
                    for _ in range(report.capacity_total)
                ]
                for call in calls:
                    call.result()
            name = PLATFORM_NAMES[report.platform]
            print(f"warmed up {name}: {report.capacity_total} slot(s)")
    finally:
        set_policy(stub, pinned_platform=types_pb2.PLATFORM_UNSPECIFIED)
