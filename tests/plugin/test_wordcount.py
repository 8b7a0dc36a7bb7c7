"""A user's tests of their action, with nothing but the plugin's fixtures: the handler
called directly with made jobs, as a Lambda function, and end to end in a pipeline."""

import json

from wordcount import app, count_words, handler

SOURCE = {"README.txt": "two words", "docs/guide.txt": "three more words", "logo.svg": "<svg/>"}


def test_the_first_step_only_starts(make_job):
    job = make_job(app, inputs={"SourceOutput": SOURCE}, outputs=["Counts"])

    result = count_words(job)

    assert result.state == {"step": 2}
    assert result.summary == "counting"


def test_the_next_step_counts_the_matching_files(make_job):
    job = make_job(
        app, inputs={"SourceOutput": SOURCE}, outputs=["Counts"], continuation={"step": 2}
    )

    result = count_words(job)

    assert result.summary == "5 words in 2 files"
    assert result.output_variables == {"Words": "5"}
    counts = make_job.output(job, "Counts") / "counts.json"
    assert json.loads(counts.read_text()) == {"README.txt": 2, "docs/guide.txt": 3}


class Context:
    """What the Lambda runtime reads of Lambda's context object."""

    aws_request_id = "test-request"

    def get_remaining_time_in_millis(self):
        return 60_000


def test_as_a_lambda_function_the_first_step_continues(make_job):
    event = make_job.event(config={"Pattern": "*.txt"}, model="integration")

    answer = handler(event, Context())

    assert answer["result"] == "Continue"
    assert json.loads(answer["continuation"]["State"]) == {"step": 2}


def test_end_to_end_in_a_pipeline(run_action, tmp_path):
    (tmp_path / "a.txt").write_text("alpha beta gamma")

    run = run_action(app, source=tmp_path, outputs=["Counts"])

    assert run.status == "Succeeded"
    assert run.summary == "3 words in 1 files"
    assert run.variables == {"Words": "3"}
    assert json.loads((run.outputs["Counts"] / "counts.json").read_text()) == {"a.txt": 3}


def test_end_to_end_a_failure_is_shown_on_the_action(run_action):
    run = run_action(app, config={"Pattern": "*.rst"}, source={"a.txt": "x"})

    assert run.status == "Failed"
    assert run.error == {"code": "JobFailed", "message": "no file matches '*.rst'"}
