"""A single-node swarm of this machine's engine, made for the test (and left at its end) when
the engine is not in one already."""

import docker
import pytest

GPU_LABEL = "straightline.gpu"
SWARM_BRIDGE = "docker_gwbridge"


@pytest.fixture
def swarm():
    """This engine as a swarm manager whose node may run jobs and GPU model servers."""
    engine = docker.from_env()
    made_here = engine.info()["Swarm"]["LocalNodeState"] == "inactive"
    bridge_before = bool(engine.networks.list(names=[SWARM_BRIDGE]))
    if made_here:
        engine.swarm.init(advertise_addr="127.0.0.1")
    node = engine.nodes.get(engine.info()["Swarm"]["NodeID"])
    labelled_here = GPU_LABEL not in node.attrs["Spec"].get("Labels", {})
    set_label(node, "true")
    try:
        yield engine
    finally:
        if labelled_here:
            node.reload()
            set_label(node, None)
        if made_here:
            engine.swarm.leave(force=True)
            if not bridge_before:  # made by the swarm's init, which leaving does not remove
                for network in engine.networks.list(names=[SWARM_BRIDGE]):
                    network.remove()
        engine.close()


def set_label(node, value: str | None) -> None:
    spec = dict(node.attrs["Spec"])
    labels = {k: v for k, v in spec.get("Labels", {}).items() if k != GPU_LABEL}
    node.update({**spec, "Labels": {**labels, **({GPU_LABEL: value} if value else {})}})
