"""``ipmn serve``: the protection service of paper §3.1 (Fig. 1) over HTTP, with a web page (inference layer).

:mod:`~ipmn_lightning.serve.command` (the command), :mod:`~ipmn_lightning.serve.app` (the FastAPI app),
:mod:`~ipmn_lightning.serve.engine` (the bundles and the work on photos), :mod:`~ipmn_lightning.serve.keys`
(API keys), :mod:`~ipmn_lightning.serve.limits` (upload, pixel and rate limits), :mod:`~ipmn_lightning.serve.page`
(the web page). FastAPI and uvicorn (the ``serve`` extra) are imported by the app only, so this package imports
without them.
"""

from ipmn_lightning.serve.command import serve

__all__ = ["serve"]
