# Two commands on a fresh machine with python3 and pip: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BUILD := build
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
# The offline models are tiny: one intra-op thread per process is faster than two that wait on each other
# (measured on the 2-core machine: tests/test_backend_lavis.py 66 s -> 9 s; the whole suite 5.5 min).
# Benchmarks of full-size models keep torch's default.
run test: export OMP_NUM_THREADS ?= 1

.PHONY: install run test lint format clean figures bench toyworld

install: $(STAMP)

# Reinstall when the dependency list changes. The kernelspec makes `python3` in papermill and nbval mean this venv.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m helpers.install_lavis
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" > /dev/null
	touch $(STAMP)

# Every notebook, headless, offline profile; executed copies land in build/notebooks/.
run: $(STAMP)
	mkdir -p $(BUILD)/notebooks
	for notebook in $(NOTEBOOKS); do \
		BLIP2_PROFILE=offline $(BIN)/papermill --log-level WARNING -k python3 -p PROFILE offline \
			"$$notebook" "$(BUILD)/notebooks/$$(basename $$notebook)" || exit 1; \
	done

# Unit tests, papermill runs of every notebook, nbval on every notebook, lint and hygiene.
test: $(STAMP)
	BLIP2_PROFILE=offline $(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider

# Every figure of figures/ (README and notebook diagrams), redrawn byte for byte from the real architectures.
figures: $(STAMP)
	$(BIN)/python -m helpers.figures figures

# Every benchmark in benchmarks/ (CPU here; GPU parts when a GPU is present): one JSON each in build/bench/,
# then build/bench/SUMMARY.md, the table the README's Performance section shows. Not part of `make test`.
BENCHMARKS := $(sort $(wildcard benchmarks/*.py))
bench: $(STAMP)
	mkdir -p $(BUILD)/bench
	for benchmark in $(BENCHMARKS); do \
		$(BIN)/python "$$benchmark" --out $(BUILD)/bench || exit 1; \
	done
	$(BIN)/python -m helpers.benchmarking $(BUILD)/bench

# Retrain the toy-world miniature BLIP-2 (about 7 min on 2 CPU cores, then 10 min of ablations) and rewrite
# data/toyworld/ atomically: both checkpoints, manifest.json and ablations.json.
toyworld: $(STAMP)
	$(BIN)/python -m helpers.toyworld

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check helpers tests

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format helpers tests

clean:
	rm -rf $(BUILD)
