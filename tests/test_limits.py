"""The quota table cpworker reads is botocore's CodePipeline model, not numbers typed in."""

from __future__ import annotations

import json

from cpworker.limits import SHAPES, TABLE, botocore_shapes, result_limits


def test_the_shipped_table_is_what_the_installed_botocore_says() -> None:
    assert json.loads(TABLE.read_text()) == botocore_shapes(), (
        "botocore's CodePipeline model changed: regenerate the table with "
        "python -c 'import cpworker.limits as l; l.write_table()'"
    )
    assert set(json.loads(TABLE.read_text())) == set(SHAPES)


def test_result_limits_are_botocores() -> None:
    model, limits = botocore_shapes(), result_limits()
    token = model["ContinuationToken"]
    assert (limits.continuation_token.min, limits.continuation_token.max) == (
        token["min"],
        token["max"],
    )
    assert limits.output_variable_name.pattern is not None
    assert limits.output_variable_name.pattern.pattern == model["OutputVariablesKey"]["pattern"]
