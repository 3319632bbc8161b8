# Sourced by the scripts that run on the lent GPU machine (benchmarks/gpu_check.sh,
# scripts/gpu_leg.sh) from the repository root, with $PY and $OUT set: makes gsasr_kernels
# (kernels/, by pyproject's package-dir mapping) and gsasr_cli.weights (where it is
# weights/) importable without installing the package, when they are not installed.
if ! $PY -c "import gsasr_kernels, gsasr_cli.weights" 2>/dev/null; then
    SHIM="$OUT/.pythonpath"
    rm -rf "$SHIM" && mkdir -p "$SHIM"
    ln -s "$PWD/kernels" "$SHIM/gsasr_kernels"
    if [[ -d gsasr_cli/weights ]]; then
        ln -s "$PWD/gsasr_cli" "$SHIM/gsasr_cli"
    else
        mkdir "$SHIM/gsasr_cli"
        for f in "$PWD"/gsasr_cli/*; do ln -s "$f" "$SHIM/gsasr_cli/"; done
        ln -s "$PWD/weights" "$SHIM/gsasr_cli/weights"
    fi
    export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi
