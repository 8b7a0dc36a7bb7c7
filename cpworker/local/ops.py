"""CodePipeline operations of the local engine: validate, dispatch, shape the answer.

Every request is first validated against botocore's service model
(:mod:`cpworker.local.validation`), so the engine only sees well-formed input. Answers
follow botocore's output shapes, and List* operations paginate with opaque tokens.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from cpworker.local.engine import Engine
from cpworker.local.errors import ServiceError
from cpworker.local.validation import validate_request

__all__ = ["Operations", "ServiceError"]

Params = dict[str, Any]
Answer = dict[str, Any]


class Operations:
    """The operation table the server calls: ``call("PollForJobs", {...})``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._handlers: dict[str, Callable[[Params], Answer]] = {
            "CreateCustomActionType": self._create_custom_action_type,
            "DeleteCustomActionType": self._delete_custom_action_type,
            "ListActionTypes": self._list_action_types,
            "GetActionType": self._get_action_type,
            "UpdateActionType": self._update_action_type,
            "CreatePipeline": self._create_pipeline,
            "GetPipeline": self._get_pipeline,
            "UpdatePipeline": self._update_pipeline,
            "DeletePipeline": self._delete_pipeline,
            "ListPipelines": self._list_pipelines,
            "StartPipelineExecution": self._start_pipeline_execution,
            "GetPipelineExecution": self._get_pipeline_execution,
            "ListPipelineExecutions": self._list_pipeline_executions,
            "GetPipelineState": self._get_pipeline_state,
            "ListActionExecutions": self._list_action_executions,
            "PollForJobs": self._poll_for_jobs,
            "AcknowledgeJob": self._acknowledge_job,
            "GetJobDetails": self._get_job_details,
            "PutJobSuccessResult": self._put_job_success_result,
            "PutJobFailureResult": self._put_job_failure_result,
            "PollForThirdPartyJobs": self._poll_for_third_party_jobs,
            "GetThirdPartyJobDetails": self._get_third_party_job_details,
            "AcknowledgeThirdPartyJob": self._acknowledge_third_party_job,
            "PutThirdPartyJobSuccessResult": self._put_third_party_job_success_result,
            "PutThirdPartyJobFailureResult": self._put_third_party_job_failure_result,
        }

    def call(self, operation: str, params: Params) -> Answer:
        """Answer one request, or raise ServiceError with a modelled error code."""
        validate_request(operation, params)
        handler = self._handlers.get(operation)
        if handler is None:
            raise ServiceError(
                "UnknownOperationException", f"cpworker local does not implement {operation}"
            )
        return handler(params)

    def _page(self, operation: str, items: list[Any], params: Params, key: str) -> Answer:
        """One page of ``items`` from ``params['nextToken']``, with the next token if any."""
        size: int = params.get("maxResults") or self.engine.settings.page_size
        offset = _decode_token(operation, params.get("nextToken"))
        answer: Answer = {key: items[offset : offset + size]}
        if offset + size < len(items):
            answer["nextToken"] = _encode_token(operation, offset + size)
        return answer

    # -- action types ----------------------------------------------------------------

    def _create_custom_action_type(self, params: Params) -> Answer:
        return self.engine.create_custom_action_type(params)

    def _delete_custom_action_type(self, params: Params) -> Answer:
        self.engine.delete_custom_action_type(
            params["category"], params["provider"], params["version"]
        )
        return {}

    def _list_action_types(self, params: Params) -> Answer:
        types = self.engine.list_action_types(params.get("actionOwnerFilter"))
        return self._page("ListActionTypes", types, params, "actionTypes")

    def _get_action_type(self, params: Params) -> Answer:
        return {"actionType": self.engine.get_action_type(params)}

    def _update_action_type(self, params: Params) -> Answer:
        self.engine.update_action_type(params["actionType"])
        return {}

    # -- pipelines -------------------------------------------------------------------

    def _create_pipeline(self, params: Params) -> Answer:
        answer: Answer = {"pipeline": self.engine.create_pipeline(params["pipeline"])}
        if params.get("tags"):
            answer["tags"] = params["tags"]
        return answer

    def _get_pipeline(self, params: Params) -> Answer:
        return self.engine.get_pipeline(params["name"], params.get("version"))

    def _update_pipeline(self, params: Params) -> Answer:
        return {"pipeline": self.engine.update_pipeline(params["pipeline"])}

    def _delete_pipeline(self, params: Params) -> Answer:
        self.engine.delete_pipeline(params["name"])
        return {}

    def _list_pipelines(self, params: Params) -> Answer:
        return self._page("ListPipelines", self.engine.list_pipelines(), params, "pipelines")

    # -- executions ------------------------------------------------------------------

    def _start_pipeline_execution(self, params: Params) -> Answer:
        execution_id = self.engine.start_pipeline_execution(
            params["name"], params.get("variables", []), params.get("clientRequestToken")
        )
        return {"pipelineExecutionId": execution_id}

    def _get_pipeline_execution(self, params: Params) -> Answer:
        execution = self.engine.get_pipeline_execution(
            params["pipelineName"], params["pipelineExecutionId"]
        )
        return {"pipelineExecution": execution}

    def _list_pipeline_executions(self, params: Params) -> Answer:
        summaries = self.engine.list_pipeline_executions(params["pipelineName"])
        return self._page("ListPipelineExecutions", summaries, params, "pipelineExecutionSummaries")

    def _get_pipeline_state(self, params: Params) -> Answer:
        return self.engine.get_pipeline_state(params["name"])

    def _list_action_executions(self, params: Params) -> Answer:
        execution_id = params.get("filter", {}).get("pipelineExecutionId")
        details = self.engine.list_action_executions(params["pipelineName"], execution_id)
        return self._page("ListActionExecutions", details, params, "actionExecutionDetails")

    # -- jobs ------------------------------------------------------------------------

    def _poll_for_jobs(self, params: Params) -> Answer:
        jobs = self.engine.poll_for_jobs(
            params["actionTypeId"], params.get("maxBatchSize", 1), params.get("queryParam") or {}
        )
        return {"jobs": jobs}

    def _acknowledge_job(self, params: Params) -> Answer:
        return {"status": self.engine.acknowledge_job(params["jobId"], params["nonce"])}

    def _get_job_details(self, params: Params) -> Answer:
        return {"jobDetails": self.engine.get_job_details(params["jobId"])}

    def _put_job_success_result(self, params: Params) -> Answer:
        self.engine.put_job_success_result(params)
        return {}

    def _put_job_failure_result(self, params: Params) -> Answer:
        self.engine.put_job_failure_result(params)
        return {}

    # -- third-party jobs ------------------------------------------------------------

    def _poll_for_third_party_jobs(self, params: Params) -> Answer:
        jobs = self.engine.poll_for_third_party_jobs(
            params["actionTypeId"], params.get("maxBatchSize", 1)
        )
        return {"jobs": jobs}

    def _get_third_party_job_details(self, params: Params) -> Answer:
        details = self.engine.get_third_party_job_details(params["jobId"], params["clientToken"])
        return {"jobDetails": details}

    def _acknowledge_third_party_job(self, params: Params) -> Answer:
        status = self.engine.acknowledge_third_party_job(
            params["jobId"], params["nonce"], params["clientToken"]
        )
        return {"status": status}

    def _put_third_party_job_success_result(self, params: Params) -> Answer:
        self.engine.put_third_party_job_success_result(params)
        return {}

    def _put_third_party_job_failure_result(self, params: Params) -> Answer:
        self.engine.put_third_party_job_failure_result(params)
        return {}


def _encode_token(operation: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{operation}:{offset}".encode()).decode()


def _decode_token(operation: str, token: str | None) -> int:
    """The offset a nextToken stands for; tokens of other operations are invalid."""
    if token is None:
        return 0
    try:
        name, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if name == operation and offset.isdigit():
            return int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ServiceError("InvalidNextTokenException", "The nextToken is not valid")
