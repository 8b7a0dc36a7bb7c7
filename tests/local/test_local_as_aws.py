"""Where the local CodePipeline must answer as AWS does, so that what works locally
works on AWS: a queryable type is polled with its property, and the built-in
``#{codepipeline.PipelineExecutionId}`` variable resolves."""

from __future__ import annotations

import pytest
from cpw_local_lab import Lab

PROJECT = [{"name": "Project", "required": True, "key": True, "secret": False, "queryable": True}]


def test_a_queryable_type_is_not_polled_without_query_param(lab: Lab) -> None:
    type_id = lab.action_type(properties=PROJECT)
    lab.pipeline([lab.action(type_id, configuration={"Project": "alpha"})])

    with pytest.raises(
        lab.codepipeline.exceptions.ValidationException,
        match="queryParam is required: this action type has the queryable property 'Project'",
    ):
        lab.codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=1)
    (job,) = lab.poll(type_id, query={"Project": "alpha"})
    assert job["data"]["actionConfiguration"]["configuration"] == {"Project": "alpha"}


def test_the_pipeline_execution_id_variable_resolves(lab: Lab) -> None:
    type_id = lab.action_type(properties=[{"name": "Run", "required": True, "key": True,
                                           "secret": False}])  # fmt: skip
    configuration = {"Run": "run-#{codepipeline.PipelineExecutionId}"}
    _, execution_id = lab.pipeline([lab.action(type_id, configuration=configuration)])

    (job,) = lab.poll(type_id)
    assert job["data"]["actionConfiguration"]["configuration"] == {"Run": f"run-{execution_id}"}
