"""The serverless case of ``bench/pickup.py``: the noop action of the chaos apps as an
EventBridge-invoked custom-action worker (``cpworker local`` runs it per invocation,
with ``tests/worker`` on its PYTHONPATH)."""

from cpw_chaos_apps import app

from cpworker import lambda_handler

handler = lambda_handler(app, "noop")
