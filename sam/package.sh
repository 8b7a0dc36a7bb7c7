#!/bin/sh
# Build sam/.package/, the CodeUri of every function in sam/template.yaml: the cpworker
# wheel (which holds the `cpworker` and `handlers` packages) and its dependencies,
# installed for the Lambda runtime's Python and platform, not this machine's.
# Run it before `sam deploy` (sam build is not needed: the directory is the package).
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LAMBDA_PYTHON=3.14              # keep in step with Runtime in template.yaml
LAMBDA_PLATFORM=manylinux2014_x86_64  # keep in step with Architectures in template.yaml

rm -rf sam/.package sam/.wheel
"$PYTHON" -m pip wheel --no-deps --wheel-dir sam/.wheel .
"$PYTHON" -m pip install --target sam/.package --only-binary=:all: \
    --implementation cp --python-version "$LAMBDA_PYTHON" --platform "$LAMBDA_PLATFORM" \
    sam/.wheel/cpworker-*.whl
rm -rf sam/.wheel
