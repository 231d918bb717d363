#!/usr/bin/env bash
# The OpenAPI 3.1 documents in docs/api/ lint clean with Redocly's CLI
# (recommended rules, docs/api/redocly.yaml). The CLI comes from npm into a
# cache directory outside the repository; no npm registry → the test fails.
set -euo pipefail
SRC=${STRATA_SOURCE_DIR:?run through ctest}
CACHE=${STRATA_NPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strata-npm}
REDOCLY_VERSION=2.77.0
bin=$CACHE/node_modules/.bin/redocly
if [ ! -x "$bin" ] || [ "$(node -e "console.log(require('$CACHE/node_modules/@redocly/cli/package.json').version)")" != "$REDOCLY_VERSION" ]; then
  mkdir -p "$CACHE"
  npm install --prefix "$CACHE" --no-audit --no-fund --silent "@redocly/cli@$REDOCLY_VERSION" \
    || { echo "FAIL: cannot install @redocly/cli@$REDOCLY_VERSION from npm" >&2; exit 1; }
fi
docs=("$SRC"/docs/api/*.yaml)
files=()
for f in "${docs[@]}"; do [ "$(basename "$f")" = redocly.yaml ] || files+=("$f"); done
[ ${#files[@]} -ge 3 ] || { echo "FAIL: expected the three service documents in docs/api" >&2; exit 1; }
out=$("$bin" lint --config "$SRC/docs/api/redocly.yaml" "${files[@]}" 2>&1) || { echo "$out" >&2; echo "FAIL: OpenAPI lint" >&2; exit 1; }
echo "$out" | grep -q "valid" || { echo "$out" >&2; exit 1; }
if echo "$out" | grep -qE "Warning was generated|[0-9]+ warnings?"; then echo "$out" >&2; echo "FAIL: lint warnings" >&2; exit 1; fi
echo "ok   ${#files[@]} OpenAPI documents lint clean"
