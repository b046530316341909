# The menu of project commands; each recipe is a thin wrapper over cargo or scripts/.

# List the recipes.
default:
    @just --list

alias t := test

# Build, start the renderer and the relay, and print the URL (Ctrl-C stops both).
[group('run')]
run:
    scripts/run

# Formatting, lints and every test, exactly as CI runs them.
[group('check')]
test:
    scripts/test

# Lints only.
[group('check')]
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
[group('check')]
fmt:
    cargo fmt --all

# Benchmarks of the render stages (the `heatmap` crate).
[group('measure')]
bench:
    cargo bench -p heatmap
