"""Server-side validation from botocore's service model: what the client lets through."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from cpw_local_lab import Lab

from cpworker.local.errors import ServiceError
from cpworker.local.server import LocalCodePipeline
from cpworker.local.validation import validate_request


def test_unknown_operation_is_refused_by_the_validator() -> None:
    with pytest.raises(ServiceError) as caught:
        validate_request("BakeCake", {})
    assert caught.value.code == "UnknownOperationException"
    assert caught.value.status == 400


def test_unknown_operation_over_http(local: LocalCodePipeline) -> None:
    request = urllib.request.Request(
        local.endpoint_url,
        data=b"{}",
        headers={
            "X-Amz-Target": "CodePipeline_20150709.BakeCake",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["__type"] == "UnknownOperationException"


@pytest.mark.parametrize(
    ("changes", "path", "constraint"),
    [
        ({"provider": "P" * 36}, "provider", "length less than or equal to 35"),
        ({"provider": "has space"}, "provider", "regular expression pattern"),
        ({"category": "Cook"}, "category", "enum value set"),
        ({"version": "1234567890"}, "version", "length less than or equal to 9"),
    ],
)
def test_action_type_fields_are_checked_on_the_server(
    lab: Lab, changes: dict[str, str], path: str, constraint: str
) -> None:
    request: dict[str, Any] = {
        "category": "Build",
        "provider": f"Valid-{lab.uid}",
        "version": "1",
        "inputArtifactDetails": {"minimumCount": 0, "maximumCount": 1},
        "outputArtifactDetails": {"minimumCount": 0, "maximumCount": 1},
    } | changes

    with pytest.raises(lab.codepipeline.exceptions.ValidationException) as caught:
        lab.codepipeline.create_custom_action_type(**request)

    message = caught.value.response["Error"]["Message"]
    assert f"Value at '{path}' failed to satisfy constraint" in message
    assert constraint in message


@pytest.mark.parametrize(
    ("result", "path"),
    [
        ({"executionDetails": {"percentComplete": 101}}, "executionDetails.percentComplete"),
        ({"executionDetails": {"summary": "s" * 2049}}, "executionDetails.summary"),
        ({"outputVariables": {"bad name": "v"}}, "outputVariables"),
        ({"continuationToken": "t" * 2049}, "continuationToken"),
    ],
)
def test_invalid_success_results_change_nothing(
    lab: Lab, result: dict[str, Any], path: str
) -> None:
    type_id = lab.action_type()
    name, execution_id = lab.pipeline([lab.action(type_id)])
    job = lab.claim(type_id)

    with pytest.raises(lab.codepipeline.exceptions.ValidationException, match=f"'{path}'"):
        lab.codepipeline.put_job_success_result(jobId=job["id"], **result)

    assert lab.action_state(name, "Build")["status"] == "InProgress"
    lab.codepipeline.put_job_success_result(jobId=job["id"])
    assert lab.wait(name, execution_id)["status"] == "Succeeded"


def test_failure_message_over_5000_characters_is_refused(lab: Lab) -> None:
    type_id = lab.action_type()
    name, _ = lab.pipeline([lab.action(type_id)])
    job = lab.claim(type_id)

    with pytest.raises(lab.codepipeline.exceptions.ValidationException) as caught:
        lab.codepipeline.put_job_failure_result(
            jobId=job["id"], failureDetails={"type": "JobFailed", "message": "m" * 5001}
        )

    assert (
        "Value at 'failureDetails.message' failed to satisfy constraint: "
        "Member must have length less than or equal to 5000"
    ) in caught.value.response["Error"]["Message"]
    assert lab.action_state(name, "Build")["status"] == "InProgress"
