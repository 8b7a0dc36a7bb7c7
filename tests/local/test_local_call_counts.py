"""CpworkerLocal.GetCallCounts: the CodePipeline requests received, by operation, refused
ones included, so that a bench can tell how many calls a worker makes per job."""

from __future__ import annotations

from collections import Counter

import pytest
from cpw_local_lab import Lab

from cpworker.local.private import call_private
from cpworker.local.server import LocalCodePipeline


def test_call_counts_tell_each_codepipeline_request_by_operation(
    local: LocalCodePipeline, lab: Lab
) -> None:
    before = Counter(call_private(local.endpoint_url, "GetCallCounts", {})["calls"])
    type_id = lab.action_type()
    lab.codepipeline.list_pipelines()
    lab.codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=1)
    with pytest.raises(lab.codepipeline.exceptions.ValidationException):
        lab.codepipeline.acknowledge_job(jobId="not-a-job", nonce="n")

    after = Counter(call_private(local.endpoint_url, "GetCallCounts", {})["calls"])

    assert after - before == {
        "CreateCustomActionType": 1,
        "ListPipelines": 1,
        "PollForJobs": 1,
        "AcknowledgeJob": 1,
    }
