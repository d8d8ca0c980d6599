"""A model whose files are missing or corrupt affects no other model (issue 16)."""

import pytest

from straightline_common.errors import FailedPrecondition
from straightline_common.modelstore import ModelStore
from straightline_inference.model import ModelSet
from tests.support.models import image_bytes, make_classifier

pytestmark = [pytest.mark.tensorflow, pytest.mark.faults]


def test_a_model_that_cannot_load_is_refused_alone_and_served_once_restored(tmp_path):
    store = ModelStore(tmp_path / "models")
    make_classifier(store, "good")
    broken = make_classifier(store, "broken")
    saved = broken.model_path.read_bytes()
    broken.model_path.write_bytes(b"not an HDF5 file")

    models = ModelSet(store)  # starts, with the model that loads
    assert models.refs() == [("good", "1")]
    assert models.get("good").predict(image_bytes(), "image/jpeg").classes
    with pytest.raises(FailedPrecondition, match="model broken version 1 cannot be loaded"):
        models.get("broken")

    broken.model_path.write_bytes(saved)
    assert models.get("broken").predict(image_bytes(), "image/jpeg").classes
    assert models.refs() == [("broken", "1"), ("good", "1")]
