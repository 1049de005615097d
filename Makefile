# The two entry points of the README: `make demo` and `make test`. Both run the set-up first.
.PHONY: setup build demo test fmt gpu-kit

setup:
	bash pipelines/setup.sh

build: setup
	cargo build --release --locked

demo: setup
	bash pipelines/demo.sh

test: setup
	cargo test --locked --no-fail-fast

fmt:
	cargo fmt --all

# What one device-machine call of pipelines/gpu-bench.sh carries (target/gpu-kit/); see that script.
gpu-kit: setup
	bash pipelines/gpu-kit.sh
