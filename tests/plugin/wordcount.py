"""A user's action, as in the README's "Testing your actions": it counts the words of the
source's matching files, in two steps (the first one only says it started), and writes
the counts as an output artifact and the total as an output variable."""

from __future__ import annotations

import json

from pydantic import BaseModel

from cpworker import ActionApp, Continue, Job, JobFailed, Result, Success, lambda_handler, prop


class CountConfig(BaseModel):
    Pattern: str = prop("*.txt", description="Which files of the source to count.")


app = ActionApp()


@app.action(
    category="Test", provider="WordCount", config=CountConfig, inputs=(1, 1), outputs=(0, 1)
)
def count_words(job: Job[CountConfig]) -> Result:
    if job.continuation is None:
        return Continue(state={"step": 2}, summary="counting")
    source = job.inputs.one().extract()
    counts = {
        path.relative_to(source).as_posix(): len(path.read_text().split())
        for path in sorted(source.rglob(job.config.Pattern))
    }
    if not counts:
        raise JobFailed(f"no file matches {job.config.Pattern!r}")
    if job.outputs:
        job.outputs.one().upload_files({"counts.json": json.dumps(counts)})
    total = sum(counts.values())
    return Success(
        summary=f"{total} words in {len(counts)} files", output_variables={"Words": str(total)}
    )


handler = lambda_handler(app)
