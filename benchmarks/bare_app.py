"""The baseline for benchmarks/callbacks.py: a bare Starlette endpoint that only answers OK."""

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def callback(request):
    return PlainTextResponse("OK")


app = Starlette(routes=[Route("/billing/callback", callback, methods=["POST"])])
