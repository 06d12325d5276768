"""The scripts the PayTR emulator serves, as PayTR serves its own.

PayTR's integration guide has the merchant's checkout load https://www.paytr.com/js/iframeResizer.min.js
and call `iFrameResize({}, '#paytriframe')`, so its iframe grows to the payment page's height. The
emulator serves a compatible script at the same path (our own few lines, in
templates/paytr_emulator/js/), and its pages load the other half, which reports their height.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billing.paytr import protocol

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "templates" / "paytr_emulator" / "js"
RESIZER_PATH = protocol.RESIZER_SCRIPT_PATH  # PayTR's path, which the merchant's page loads
CONTENT_PATH = "/js/iframe-resizer-content.js"  # the emulator's own pages load this one

_FILES = {RESIZER_PATH: "iframe_resizer_parent.js", CONTENT_PATH: "iframe_resizer_content.js"}


def _script(name: str):
    async def serve(request: Request) -> Response:
        return Response((SCRIPTS_DIR / name).read_bytes(), media_type="text/javascript",
                        headers={"Cache-Control": "no-cache"})

    return serve


routes = [Route(path, _script(name), methods=["GET"]) for path, name in _FILES.items()]
