"""Lambda executor functions written as integrators write them: plain Python that reads
the integration-model event and returns the result payload.

The tests register them by file (``path/cpw_integration_functions.py:name``), so each
runs in its own process, as it would in Lambda.
"""

from __future__ import annotations

import json
import time
from typing import Any


def reply(event: dict[str, Any], context: Any) -> Any:
    """Return the JSON the action's ``Reply`` property holds, whatever it is."""
    return json.loads(event["data"]["actionConfiguration"]["Reply"])


def describe_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Succeed with output variables that tell what the function was given."""
    data = event["data"]
    print(f"job {event['jobId']} started")
    return {
        "result": "Success",
        "status": {"Summary": "described", "ExternalExecutionId": event["jobId"]},
        "outputVariables": {
            "EventKeys": ",".join(sorted(event)),
            "DataKeys": ",".join(sorted(data)),
            "ConfigurationKeys": ",".join(sorted(data["actionConfiguration"])),
            "ActionExecutionId": data["actionExecutionId"],
            "AccountId": event["accountId"],
            "CredentialKeys": ",".join(sorted(data["actionCredentials"])),
            "EncryptionKeyType": data["encryptionKey"]["type"],
            "FunctionName": context.function_name,
        },
    }


def three_steps(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Continue twice, carrying the job ids seen; then succeed naming them all."""
    token = event["data"].get("continuationToken")
    seen = [*json.loads(token), event["jobId"]] if token else [event["jobId"]]
    if len(seen) < 3:
        return {
            "result": "continue",
            "continuation": {"State": json.dumps(seen)},
            "status": {"Summary": f"step {len(seen)}"},
        }
    return {"result": "success", "outputVariables": {"Jobs": ",".join(seen)}}


def crash(event: dict[str, Any], context: Any) -> None:
    raise RuntimeError("the integration crashed")


def sleep(event: dict[str, Any], context: Any) -> None:
    print("sleeping", flush=True)
    time.sleep(60)
