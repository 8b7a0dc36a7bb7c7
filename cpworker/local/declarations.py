"""Action types declared with an action-type definition file, in the User Guide's format.

A definition file is ``{"actionType": ActionTypeDeclaration}``: the body of
UpdateActionType, and what GetActionType answers. The declaration names the type
(owner ThirdParty, or AWS), its configuration properties (``optional``, ``noEcho``,
``key``, ``queryable``), its artifact counts, its URLs and its *executor*:

* ``Lambda``: CodePipeline invokes the function ``lambdaExecutorConfiguration.
  lambdaFunctionArn`` names (:mod:`cpworker.local.integration`); its ``jobTimeout`` is
  at most 900 seconds;
* ``JobWorker``: job workers poll for its jobs with the third-party job APIs.

Pipelines and ListActionTypes see such a type as an ``ActionType``: each property's
``required`` is ``not optional`` and ``secret`` is ``noEcho``; ``urls`` become
``settings`` (``configurationUrl`` is ``thirdPartyConfigurationUrl``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from cpworker.limits import INTEGRATION_JOB_TIMEOUT_MAX_S
from cpworker.local.actiontypes import ActionTypeRecord, check_definition
from cpworker.local.errors import ServiceError
from cpworker.local.validation import validate_request
from cpworker.result import bounded

LAMBDA, JOB_WORKER = "Lambda", "JobWorker"
EXECUTOR_CONFIGURATIONS = {
    LAMBDA: "lambdaExecutorConfiguration",
    JOB_WORKER: "jobWorkerExecutorConfiguration",
}
PROPERTY_DESCRIPTION_MAX = 160  # ActionConfigurationProperty's; a declaration allows 250
_SETTINGS = {
    "entityUrlTemplate": "entityUrlTemplate",
    "executionUrlTemplate": "executionUrlTemplate",
    "revisionUrlTemplate": "revisionUrlTemplate",
    "configurationUrl": "thirdPartyConfigurationUrl",
}


def load_definition(text: str) -> dict[str, Any]:
    """The declaration in an action-type definition file, checked as UpdateActionType
    checks it; ValueError saying what is wrong."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("actionType"), dict):
        raise ValueError('an action-type definition file is {"actionType": {...}}')
    declaration: dict[str, Any] = document["actionType"]
    try:
        declared_type(declaration)
    except ServiceError as exc:
        raise ValueError(exc.message) from None
    return declaration


def declared_type(declaration: Mapping[str, Any]) -> ActionTypeRecord:
    """The action type a declaration makes, checked as UpdateActionType checks it
    (ServiceError, a ValidationException naming the problem)."""
    validate_request("UpdateActionType", {"actionType": dict(declaration)})
    executor = declaration["executor"]
    expected = EXECUTOR_CONFIGURATIONS[executor["type"]]
    if set(executor["configuration"]) != {expected}:
        raise ServiceError(
            "ValidationException",
            f"an executor of type {executor['type']} needs executor.configuration.{expected} "
            "and nothing else",
        )
    timeout = executor.get("jobTimeout")
    limit = INTEGRATION_JOB_TIMEOUT_MAX_S
    if executor["type"] == LAMBDA and timeout is not None and timeout > limit:
        raise ServiceError(
            "ValidationException",
            f"executor.jobTimeout is {timeout} s; the Lambda integration model allows at most "
            f"{limit}",
        )
    definition = _action_type(declaration)
    check_definition(definition)
    return ActionTypeRecord(definition, tags=[], declaration=copy.deepcopy(dict(declaration)))


def _action_type(declaration: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ActionType`` structure of a declaration."""
    properties = []
    for declared in declaration.get("properties", []):
        prop: dict[str, Any] = {
            "name": declared["name"],
            "required": not declared["optional"],
            "key": declared["key"],
            "secret": declared["noEcho"],
            "queryable": declared.get("queryable", False),
        }
        if "description" in declared:
            prop["description"] = bounded(declared["description"], PROPERTY_DESCRIPTION_MAX)
        properties.append(prop)
    urls = declaration.get("urls", {})
    return {
        "id": dict(declaration["id"]),
        "settings": {_SETTINGS[name]: value for name, value in urls.items()},
        "actionConfigurationProperties": properties,
        "inputArtifactDetails": dict(declaration["inputArtifactDetails"]),
        "outputArtifactDetails": dict(declaration["outputArtifactDetails"]),
    }
