"""Ray Serve serving the peers benchmark's model, run by the Ray virtual environment's Python
(`bench/peers/venvs.py` makes it): one deployment of `--replicas` replicas, each loading the
model from our store with our decode-and-predict code (the same as every other server in the
benchmark), behind Ray Serve's HTTP proxy on `--port`, or behind HAProxy with Ray's
high-throughput mode (`RAY_SERVE_ENABLE_HA_PROXY=1`, `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`, set by
the caller). POST a JPEG to /classify; the answer is the top class, JSON. With `--grpc-port`,
Ray Serve serves StraightLine's own `InferenceService.Predict` there as well (its gRPC proxy,
or HAProxy in the high-throughput mode; the
deployment's `Predict` method, as Ray's gRPC guide has user-defined services): the same
request a StraightLine adapter takes, so the two are compared on one message.

    python bench/peers/ray_serve_app.py --store DIR --model small --port 8000 --replicas 2 \
        [--grpc-port 9000]
"""

import argparse
import asyncio
import signal
import threading

import ray
from ray import serve
from ray.serve.config import gRPCOptions
from starlette.requests import Request

from straightline.v1 import inference_pb2, types_pb2

SERVICER = "straightline.v1.inference_pb2_grpc.add_InferenceServiceServicer_to_server"


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=8)
class Classifier:
    def __init__(self, store: str, model: str) -> None:
        from straightline_common.modelstore import open_store
        from straightline_inference.model import ModelSet

        self._model = ModelSet(open_store(store, ""), [model]).get(model)

    async def __call__(self, request: Request) -> dict:
        body = await request.body()
        # The model on a thread, as Ray's guide has it: the replica's loop keeps reading.
        prediction = await asyncio.to_thread(self._model.predict, body, "image/jpeg", 1)
        top = prediction.classes[0]
        return {"label": top.label, "score": top.score}

    async def Predict(self, request: inference_pb2.PredictRequest) -> inference_pb2.PredictResponse:
        prediction = await asyncio.to_thread(
            self._model.predict, request.payload, request.content_type, request.top_k or 1
        )
        classes = [types_pb2.ClassScore(label=c.label, score=c.score) for c in prediction.classes]
        return inference_pb2.PredictResponse(request_id=request.request_id, classes=classes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args()
    # Ray's own traffic (its control store, raylet, workers) on loopback, as every other
    # process of the benchmark: by default it binds the machine's address.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    grpc_options = (
        gRPCOptions(port=args.grpc_port, grpc_servicer_functions=[SERVICER])
        if args.grpc_port
        else None
    )
    serve.start(http_options={"host": "127.0.0.1", "port": args.port}, grpc_options=grpc_options)
    app = Classifier.options(num_replicas=args.replicas).bind(args.store, args.model)
    serve.run(app, route_prefix="/classify")
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
