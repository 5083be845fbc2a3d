"""Stand-ins for components behind the gateway: a REST echo app and a v2 gRPC servicer.

Each is tagged, so a test can tell which backend answered. Model names with a meaning:
`slow` sleeps longer than the gateway's test timeout; `?status=N` makes the REST echo answer N;
gRPC model `refuse` answers NOT_FOUND itself (a backend error to pass through). Both count the
requests they get in a shared `Hits`, so a test can prove a request never reached them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import orjson
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SLOW_S = 1.5
ECHOED_HEADERS = ("content-type", "inference-header-content-length", "x-request-id",
                  "authorization", "accept", "cookie", "x-api-key", "x-tenant",
                  "x-forwarded-for", "x-modelserve-revision")


@dataclass
class Hits:
    """How many requests an upstream (REST and gRPC together) has received."""

    count: int = 0


def echo_app(tag: str, hits: Hits | None = None) -> Starlette:
    hits = hits if hits is not None else Hits()

    async def echo(request: Request) -> Response:
        hits.count += 1
        name = request.path_params["name"]
        if name == "slow":
            await asyncio.sleep(SLOW_S)
        body = await request.body()
        answer = {
            "upstream": tag,
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "name": name,
            "headers": {k: request.headers[k] for k in ECHOED_HEADERS if k in request.headers},
            "body": body.decode("latin-1"),
        }
        status = int(request.query_params.get("status", "200"))
        headers = {"inference-header-content-length": "7", "x-internal": "secret"}
        return Response(orjson.dumps(answer), status, headers, media_type="application/json")

    routes = [
        Route("/v1/models/{name}:predict", echo, methods=["POST"]),
        Route("/v1/models/{name}", echo, methods=["GET"]),
        Route("/v2/models/{name}/infer", echo, methods=["POST"]),
        Route("/v2/models/{name}/ready", echo, methods=["GET"]),
        Route("/v2/models/{name}", echo, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/infer", echo, methods=["POST"]),
    ]
    return Starlette(routes=routes)


Context = aio.ServicerContext


class EchoServicer(pb_grpc.GRPCInferenceServiceServicer):
    """`inference.GRPCInferenceService` answering with its tag and the metadata it received."""

    def __init__(self, tag: str, hits: Hits | None = None) -> None:
        super().__init__()
        self.tag = tag
        self.hits = hits if hits is not None else Hits()

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> object:
        self.hits.count += 1
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> object:
        self.hits.count += 1
        return pb.ModelMetadataResponse(name=request.name, platform=self.tag)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> object:
        self.hits.count += 1
        if request.model_name == "refuse":
            await context.abort(grpc.StatusCode.NOT_FOUND, "backend refuses this model")
        if request.model_name == "slow":
            await asyncio.sleep(SLOW_S)
        metadata = dict(context.invocation_metadata() or ())
        response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
        response.parameters["upstream"].string_param = self.tag
        response.parameters["x-test"].string_param = str(metadata.get("x-test", ""))
        response.parameters["metadata-keys"].string_param = ",".join(sorted(metadata))
        response.raw_output_contents.append(b"".join(request.raw_input_contents))
        return response


async def start_grpc(tag: str, hits: Hits | None = None) -> tuple[aio.Server, int]:
    server = aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(EchoServicer(tag, hits), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port
