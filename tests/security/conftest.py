"""The security suite attacks the same real processes the integration tests start."""

from tests.integration.conftest import (  # noqa: F401 (fixtures)
    adapters,
    placer,
    start_placer,
    stub,
)
