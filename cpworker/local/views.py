"""Wire views of executions and action executions, in botocore's output shapes.

Pure functions of engine state (callers hold the engine lock). Timestamps are epoch
seconds, as the JSON 1.1 protocol sends them; absent values are left out, not null.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cpworker.local.executions import ActionRun, Execution
from cpworker.local.jobs import Job
from cpworker.local.pipelines import PipelineRecord

SECRET_MASK = "****"  # noqa: S105 - the mask shown instead of a secret value


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def execution(ex: Execution) -> dict[str, Any]:
    """The ``PipelineExecution`` structure."""
    return _compact(
        {
            "pipelineName": ex.pipeline,
            "pipelineVersion": ex.version,
            "pipelineExecutionId": ex.id,
            "status": ex.status,
            "statusSummary": ex.summary,
            "artifactRevisions": [
                {"name": a.name, "revisionId": a.revision, "created": run.updated}
                for run, a in ex.source_revisions()
            ],
            "variables": [{"name": k, "resolvedValue": v} for k, v in ex.variables.items()],
            "trigger": {"triggerType": ex.trigger},
            "executionMode": ex.mode,
            "executionType": "STANDARD",
        }
    )


def execution_summary(ex: Execution) -> dict[str, Any]:
    """The ``PipelineExecutionSummary`` structure."""
    return _compact(
        {
            "pipelineExecutionId": ex.id,
            "status": ex.status,
            "statusSummary": ex.summary,
            "startTime": ex.started,
            "lastUpdateTime": ex.updated,
            "sourceRevisions": [
                {"actionName": run.name, "revisionId": a.revision}
                for run, a in ex.source_revisions()
            ],
            "trigger": {"triggerType": ex.trigger},
            "executionMode": ex.mode,
            "executionType": "STANDARD",
        }
    )


def pipeline_summary(record: PipelineRecord) -> dict[str, Any]:
    """The ``PipelineSummary`` structure."""
    return {
        "name": record.name,
        "version": record.version,
        "pipelineType": record.declaration["pipelineType"],
        "executionMode": record.declaration["executionMode"],
        "created": record.created,
        "updated": record.updated,
    }


def _error(run: ActionRun) -> dict[str, str] | None:
    return dict(run.error) if run.error else None


def action_execution(run: ActionRun) -> dict[str, Any]:
    """The ``ActionExecution`` structure (GetPipelineState ``latestExecution``)."""
    return _compact(
        {
            "actionExecutionId": run.id,
            "status": run.status,
            "summary": run.summary,
            "lastStatusChange": run.updated,
            "externalExecutionId": run.external_id,
            "externalExecutionUrl": run.external_url,
            "percentComplete": run.percent,
            "errorDetails": _error(run),
        }
    )


def action_execution_detail(run: ActionRun) -> dict[str, Any]:
    """The ``ActionExecutionDetail`` structure of ListActionExecutions."""
    secrets = run.action_type.secrets
    configuration = {
        k: SECRET_MASK if k in secrets else v for k, v in run.declaration["configuration"].items()
    }
    resolved = {k: SECRET_MASK if k in secrets else v for k, v in run.configuration.items()}
    return _compact(
        {
            "pipelineExecutionId": run.execution.id,
            "actionExecutionId": run.id,
            "pipelineVersion": run.execution.version,
            "stageName": run.stage,
            "actionName": run.name,
            "startTime": run.started,
            "lastUpdateTime": run.updated,
            "status": run.status,
            "input": _compact(
                {
                    "actionTypeId": run.declaration["actionTypeId"],
                    "configuration": configuration,
                    "resolvedConfiguration": resolved,
                    "roleArn": run.declaration.get("roleArn"),
                    "region": run.declaration.get("region"),
                    "inputArtifacts": [a.detail() for a in run.inputs],
                    "namespace": run.declaration.get("namespace"),
                }
            ),
            "output": {
                "outputArtifacts": [a.detail() for a in run.outputs]
                if run.status == "Succeeded"
                else [],
                "executionResult": _compact(
                    {
                        "externalExecutionId": run.external_id,
                        "externalExecutionSummary": run.summary,
                        "externalExecutionUrl": run.external_url,
                        "errorDetails": _error(run),
                    }
                ),
                "outputVariables": dict(run.output_variables),
            },
        }
    )


def pipeline_state(record: PipelineRecord, executions: Iterable[Execution]) -> dict[str, Any]:
    """The GetPipelineState answer: each stage and action with its latest execution."""
    newest_first = sorted(executions, key=lambda ex: ex.started, reverse=True)
    stages = []
    for stage in record.declaration["stages"]:
        latest = next((ex for ex in newest_first if stage["name"] in ex.stage_status), None)
        stages.append(
            _compact(
                {
                    "stageName": stage["name"],
                    "inboundTransitionState": {"enabled": True},
                    "actionStates": [
                        _action_state(stage["name"], a, newest_first) for a in stage["actions"]
                    ],
                    "latestExecution": None
                    if latest is None
                    else {
                        "pipelineExecutionId": latest.id,
                        "status": latest.stage_status[stage["name"]],
                    },
                }
            )
        )
    return {
        "pipelineName": record.name,
        "pipelineVersion": record.version,
        "stageStates": stages,
        "created": record.created,
        "updated": record.updated,
    }


def _action_state(
    stage: str, action: dict[str, Any], newest_first: list[Execution]
) -> dict[str, Any]:
    runs = (
        r
        for ex in newest_first
        for r in reversed(ex.runs)
        if r.stage == stage and r.name == action["name"]
    )
    latest = next(runs, None)
    state: dict[str, Any] = {"actionName": action["name"]}
    if latest is not None:
        state["latestExecution"] = action_execution(latest)
        entity_url = latest.action_type.url("entityUrlTemplate", latest.configuration)
        if entity_url is not None:
            state["entityUrl"] = entity_url
    return state


def job_description(job: Job) -> dict[str, Any]:
    """The ``CpworkerLocal.DescribeJob`` answer: status, reported result, follow-up job."""
    return _compact(
        {"jobId": job.id, "status": job.status, "result": job.result, "nextJobId": job.next_job_id}
    )


def job_times(jobs: Iterable[Job]) -> dict[str, Any]:
    """The ``CpworkerLocal.GetJobTimes`` answer: each job's creation, (last) dispatch and
    acknowledgement, in seconds since the epoch, oldest job first. How long a job waited
    for a worker is ``acknowledgedAt - createdAt``."""
    return {
        "jobs": [
            _compact(
                {
                    "jobId": job.id,
                    "status": job.status,
                    "createdAt": job.created,
                    "dispatchedAt": job.dispatched_at,
                    "acknowledgedAt": job.acknowledged_at,
                }
            )
            for job in sorted(jobs, key=lambda job: job.created)
        ]
    }


def result_counts(jobs: Iterable[Job]) -> dict[str, Any]:
    """The ``CpworkerLocal.GetResultCounts`` answer: result requests per job (oldest
    first) and, summed, per action execution."""
    per_job: list[dict[str, Any]] = []
    per_run: dict[str, dict[str, Any]] = {}
    for job in sorted(jobs, key=lambda job: job.created):
        run, tally = job.run, job.tally
        per_job.append(
            _compact(
                {
                    "jobId": job.id,
                    "status": job.status,
                    "pipelineName": None if run is None else run.execution.pipeline,
                    "actionExecutionId": None if run is None else run.id,
                    "received": dict(tally.received),
                    "accepted": dict(tally.accepted),
                    "refused": dict(tally.refused),
                }
            )
        )
        if run is not None:
            entry = per_run.setdefault(
                run.id,
                {
                    "actionExecutionId": run.id,
                    "pipelineName": run.execution.pipeline,
                    "pipelineExecutionId": run.execution.id,
                    "actionName": run.name,
                    "steps": 0,
                    "accepted": {},
                },
            )
            entry["steps"] += 1
            for kind, count in tally.accepted.items():
                entry["accepted"][kind] = entry["accepted"].get(kind, 0) + count
    return {"jobs": per_job, "actionExecutions": list(per_run.values())}
