"""One module per runtime: turn its envelope into a ``Job`` and deliver the result."""
