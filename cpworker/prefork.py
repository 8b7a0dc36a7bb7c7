"""Imported once by the forkserver of ``cpworker serve`` (its only preload), so that
every job's child starts with the app's modules imported and boto3's models loaded,
instead of paying ~100 ms to load them.

The worker names the app's modules and its ``sys.path`` in ``$CPWORKER_PREFORK``:
Python 3.11's forkserver ignores the worker's ``sys.path`` when it preloads, and
``cpworker serve`` adds the current directory to it. Last, the garbage collector's view
of everything loaded is frozen: a child's first collection would otherwise walk, and
so copy, every page those objects share with the forkserver (copy-on-write), for
milliseconds of CPU per job.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import signal
import sys

from cpworker.artifacts import artifact_s3_client
from cpworker.isolation import PREFORK_ENV, STOP_SIGNAL, run_job
from cpworker.sources import custom, thirdparty

_wanted = json.loads(os.environ.get(PREFORK_ENV) or "{}")
sys.path[:0] = [entry for entry in _wanted.get("path", []) if entry not in sys.path]
for _module in _wanted.get("modules", []):
    with contextlib.suppress(ImportError):  # the child imports it and reports the error
        importlib.import_module(_module)

# A client with dummy credentials and an unroutable endpoint: building it loads the
# S3 model into the shared session; it never sends a request.
artifact_s3_client(
    access_key_id="prefork",
    secret_access_key="prefork",  # noqa: S106 - a placeholder, never sent
    session_token=None,
    region="us-east-1",
    endpoint_url="http://127.0.0.1:9",
)

# A job process sets its own handler for the stop signal first thing; until then the
# signal must not kill it (its default action would).
signal.signal(STOP_SIGNAL, signal.SIG_IGN)

gc.collect()
gc.freeze()

__all__ = ["custom", "run_job", "thirdparty"]
