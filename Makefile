# Shortcuts; each target is one command from the README.
.PHONY: test bench study

test:
	python -m pytest -q

bench:  ## CPU benchmark set (needs: pip install -e '.[bench]'), under 10 minutes on 2 cores
	python benchmarks/run_cpu.py

study:
	python studies/augmentation_robustness.py
