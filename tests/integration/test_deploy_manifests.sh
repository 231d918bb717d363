#!/usr/bin/env bash
# Every manifest in deploy/ is valid Kubernetes/Istio: shared/tools/k8s-validate
# checks each document against the official schemas (kubernetes-models, from
# npm into a cache on its first run). strata.dev/v1alpha1 kinds have no
# published schema and are reported as skipped; any other skip, any invalid
# document, or a validator that cannot run fails the test. Only a machine
# without node/npm skips it (exit 0 with a "SKIP:" line).
set -euo pipefail
SRC=${STRATA_SOURCE_DIR:?run through ctest}
fail() { echo "FAIL: $*" >&2; exit 1; }

for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "SKIP: $tool is not installed (k8s-validate needs node and npm)"; exit 0; }
done

# CI clones main beside shared/; a work tree may sit elsewhere.
validate=
for c in "$SRC/../shared/tools/k8s-validate" /work/shared/tools/k8s-validate; do
  [ -x "$c" ] && { validate=$c; break; }
done
[ -n "$validate" ] || fail "k8s-validate not found ($SRC/../shared/tools/k8s-validate, /work/shared/tools/k8s-validate)"
[ -d "$SRC/deploy" ] || fail "no deploy/ directory in $SRC"
ls "$SRC"/deploy/*.yaml >/dev/null 2>&1 || fail "deploy/ has no *.yaml manifests"

rc=0
out=$(timeout 280 "$validate" "$SRC/deploy" 2>&1) || rc=$?
echo "$out"
[ "$rc" -ne 124 ] || fail "k8s-validate did not finish within 280 s (installing its npm packages?)"
summary=$(echo "$out" | tail -1)
[[ $summary =~ ^([0-9]+)\ valid,\ ([0-9]+)\ invalid,\ ([0-9]+)\ skipped$ ]] \
  || fail "k8s-validate did not run to its summary (exit $rc): $summary"
valid=${BASH_REMATCH[1]} invalid=${BASH_REMATCH[2]}
[ "$invalid" -eq 0 ] && [ "$rc" -eq 0 ] || fail "$invalid invalid document(s) in deploy/ (exit $rc); see above"
[ "$valid" -gt 0 ] || fail "no Kubernetes/Istio document was validated"
others=$(echo "$out" | grep ': skipped ' | grep -v 'no schema known for strata\.dev/' || true)
[ -z "$others" ] || fail "documents skipped that are not strata.dev kinds: $others"
echo "PASS: $summary"
