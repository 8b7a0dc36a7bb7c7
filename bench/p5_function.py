"""The Lambda function bench/p5_cold_start.py measures: one no-op action, as a user
would write it, behind ``lambda_handler``."""

from cpworker import ActionApp, Job, Success, lambda_handler

app = ActionApp()


@app.action(category="Invoke", provider="CpwBenchNoop")
def noop(job: Job[None]) -> Success:
    return Success(summary="done")


handler = lambda_handler(app)
