"""Cross-service tests start the same real processes as the services' own tests: placers and
simulated adapters (tests/placer), adapters with real models (tests/inference)."""

from tests.inference.conftest import model_server, model_store, start_adapter  # noqa: F401
from tests.placer.conftest import adapters, placer, start_placer, stub  # noqa: F401
