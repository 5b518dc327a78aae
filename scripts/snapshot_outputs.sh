#!/usr/bin/env bash
# Runs every command on the shipped samples and keeps stdout, stderr and the exit code of each,
# so a refactor can be shown to change no output: run it on the old and the new tree and `diff -r`.
# Usage: scripts/snapshot_outputs.sh OUT_DIR [PACKAGE_ROOT]  (PACKAGE_ROOT defaults to this checkout)
set -u
out=$(realpath -m "$1"); root=$(realpath "${2:-$(dirname "$0")/..}")
samples=$(realpath "$(dirname "$0")/../sample_models")
work="${TMPDIR:-/tmp}/decay-audit-snapshot"  # one fixed place: SARIF records the working directory
rm -rf "$work" && mkdir -p "$work"
mkdir -p "$out"
cd "$work" && cp -r "$samples" sample_models && cp "$(dirname "$samples")/docs/examples/train.py" train.py
run() {  # run NAME ARGS...: one command, its three outputs under OUT_DIR/NAME.*
    local name=$1; shift
    PYTHONPATH="$root" python -c 'import sys; from decay_audit.cli import main; sys.argv[0] = "decay-audit"; main()' "$@" \
        >"$out/$name.out" 2>"$out/$name.err"
    echo $? >"$out/$name.rc"
}
for cmd in "" scan rules check verify; do run "help-$cmd" $cmd --help; done
for sample in seed.keras seed.h5 seed.weights.h5 seed_export seed_tfsaved subclassed.keras tf_keras.h5 \
              tf_keras_savedmodel tf_module_savedmodel zoo.keras zoo_export; do
    for fmt in table json csv markdown sarif html; do run "scan-$sample-$fmt" scan "sample_models/$sample" --format $fmt; done
    run "scan-$sample-strict" scan "sample_models/$sample" --strict --preset no-bias-norm
    for target in native keras tf-keras model-garden optax; do
        run "rules-$sample-$target" rules "sample_models/$sample" --target $target --snippet
    done
    run "check-$sample-keras" check "sample_models/$sample" --target keras --var-names bias LayerNorm
    run "check-$sample-tfkeras-sarif" check "sample_models/$sample" --target tf-keras --var-names bias gamma --format sarif
done
for fmt in table json sarif; do run "scan-many-$fmt" scan sample_models --format $fmt -j 1; done
run rules-to-file rules sample_models/zoo.keras --target native -o native.json
run check-native check sample_models/zoo.keras --target native --rules native.json --format json
run verify-seed verify sample_models/seed.keras --optimizer adamw --weight-decay 0.01 --preset no-bias-norm
run verify-setup-json verify --setup train.py:make --preset no-bias-norm --format json
run verify-setup-sarif verify --setup train.py:make --format sarif
run verify-missing verify missing.keras
rm -rf "$work"
