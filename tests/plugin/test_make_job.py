"""What ``make_job`` promises beyond the user-style tests: where a single file lands, an
output the handler left unwritten, and an invoke event as the Lambda runtime reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from wordcount import app

from cpworker import RevisionUnavailable
from cpworker.result import decode_token
from cpworker.sources.lambda_invoke import config_values, envelope_from_event
from cpworker.testing_jobs import JobMaker


def test_a_file_input_is_one_member_named_after_the_file(
    make_job: JobMaker, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("one two")

    job = make_job(app, inputs={"SourceOutput": notes})

    assert job.inputs.one().names() == ["notes.txt"]
    assert (job.inputs.one().extract() / "notes.txt").read_text() == "one two"


def test_an_output_the_handler_did_not_upload_is_said_so(make_job: JobMaker) -> None:
    job = make_job(app, inputs={"SourceOutput": {"a.txt": "x"}}, outputs=["Counts"])

    with pytest.raises(LookupError, match="output artifact 'Counts' was not uploaded"):
        make_job.output(job, "Counts")


def test_an_invoke_event_carries_the_config_in_user_parameters(make_job: JobMaker) -> None:
    event = make_job.event(config={"Pattern": "*.md", "Depth": 2}, continuation={"step": 2})

    envelope = envelope_from_event(event)
    assert config_values(envelope) == {"Pattern": "*.md", "Depth": 2}
    assert decode_token(envelope.data.continuation_token) == {"step": 2}


def test_its_artifacts_are_dropped_after_the_test(tmp_path: Path) -> None:
    maker = JobMaker(tmp_path)
    job = maker(app, inputs={"SourceOutput": {"a.txt": "x"}})

    maker.close()  # what the fixture does at teardown: moto's state outlives the test

    with pytest.raises(RevisionUnavailable, match="input artifact 'SourceOutput' was not found"):
        job.inputs.one().extract()
