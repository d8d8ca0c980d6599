"""BentoML serving the peers benchmark's model, run by the BentoML virtual environment's
`bentoml serve` (`bench/peers/venvs.py` makes it): the model loaded from our store with our
decode-and-predict code, as every server of the benchmark does. BentoML's JSON API: POST
{"image_b64": ...} to /classify; the answer is the top class.

    PEER_STORE=DIR PEER_MODEL=small bentoml serve bench.peers.bentoml_service:Classifier
"""

import base64
import os

import bentoml


@bentoml.service(workers=int(os.environ.get("PEER_WORKERS", "1")), traffic={"timeout": 30})
class Classifier:
    def __init__(self) -> None:
        from straightline_common.modelstore import open_store
        from straightline_inference.model import ModelSet

        model = os.environ["PEER_MODEL"]
        self._model = ModelSet(open_store(os.environ["PEER_STORE"], ""), [model]).get(model)

    @bentoml.api
    def classify(self, image_b64: str) -> dict:
        top = self._model.predict(base64.b64decode(image_b64), "image/jpeg", 1).classes[0]
        return {"label": top.label, "score": top.score}
