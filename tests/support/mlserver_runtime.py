"""A custom MLServer runtime that serves a model of our store, so that a real Open Inference
Protocol server we did not write (MLServer, in its own virtual environment) can stand behind
the OIP platform in tests. It answers the request shape our OIP backend sends: one BYTES input
of images (base64 in REST's JSON, with the parameter `content_type: base64`; raw over gRPC),
and the top k classes asked for with the output's `classification` parameter, as
"score:index:label" strings."""

import base64

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from straightline_common.modelstore import ModelStore
from straightline_inference.model import LoadedModel


class StoreModel(MLModel):
    async def load(self) -> bool:
        store = ModelStore(self.settings.parameters.uri)
        self._model = LoadedModel(store.resolve(self.settings.name))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        (images,) = payload.inputs
        requested = payload.outputs[0].parameters if payload.outputs else None
        top_k = int(getattr(requested, "classification", 0) or 1)
        rows = []
        in_base64 = getattr(images.parameters, "content_type", None) == "base64"
        for element in images.data.root:
            data = element if isinstance(element, bytes) else element.encode()
            image = base64.b64decode(data) if in_base64 else data
            answer = self._model.predict(image, "image/jpeg", top_k)
            rows.extend(f"{c.score:.6f}:{c.index}:{c.label}" for c in answer.classes)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                ResponseOutput(
                    name="scores", shape=[len(images.data.root), top_k], datatype="BYTES", data=rows
                )
            ],
        )
