"""The baselines for benchmarks/callbacks.py and benchmarks/api.py: bare Starlette endpoints
that answer PayTR's OK, or a fixed entitlements object of the real one's size, and do nothing else."""

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

ENTITLEMENTS = {"customer": "cus_42", "plan": "starter", "status": "trialing", "access": True,
                "limits": {"workspaces": 5, "storage_gb": 10},
                "usage": {"workspaces": None, "storage_bytes": None, "reported_at": None},
                "over_limit": [], "valid_until": "2026-12-11T09:00:00Z"}


async def callback(request):
    return PlainTextResponse("OK")


async def entitlements(request):
    return JSONResponse(ENTITLEMENTS)


app = Starlette(routes=[Route("/billing/callback", callback, methods=["POST"]),
                        Route("/api/v1/customers/{customer_id}/entitlements", entitlements)])
