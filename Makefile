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

.PHONY: install run test lint format clean figures bench toyworld compat-check gpu-check gpu-wheels lab

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

# JupyterLab on notebooks/ with the kit's venv as the `python3` kernel (the `lab` extra, added once).
LAB_STAMP := $(VENV)/.lab-stamp
$(LAB_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,lab]"
	touch $(LAB_STAMP)

lab: $(LAB_STAMP)
	$(BIN)/jupyter lab --notebook-dir notebooks

# Unit tests, papermill runs of every notebook, nbval on every notebook, lint and hygiene.
test: $(STAMP)
	BLIP2_PROFILE=offline $(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider

# Every figure of figures/ (README and notebook diagrams), redrawn byte for byte from the real architectures,
# and the README's GIF of stage 1, from the film shipped in data/toyworld/.
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

# The GPU check (a CUDA GPU with 15 GiB or more; README "GPU check"): notebooks 00-03 and 06 at full size under a
# free Colab T4's limits in both backends, the memory pre-flight against measured peaks, 20 fp16 fine-tuning steps,
# batched generation speed. Writes build/gpu-check/report.json and SUMMARY.md. Not part of `make test`.
gpu-check: $(STAMP)
	$(BIN)/python -m helpers.gpu_check --out $(BUILD)/gpu-check

# The wheels a GPU machine without network needs for the check (Python 3.12), size-checked: build/gpu-wheels/.
gpu-wheels: $(STAMP)
	$(BIN)/python -m helpers.gpu_check.wheels --out $(BUILD)/gpu-wheels

# Retrain the toy-world miniature BLIP-2 (about 8 min on 2 CPU cores, then 7 min of ablations) and rewrite
# data/toyworld/ atomically: both checkpoints, manifest.json, ablations.json and the films of every run
# (helpers/toyworld/film.py). `python -m helpers.toyworld --film-only` films the saved run without changing it.
toyworld: $(STAMP)
	$(BIN)/python -m helpers.toyworld

# Colab's stack (Python 3.13, torch 2.11, transformers 5.15, ipywidgets 7.7.1) and the declared minimums, each in
# a fresh venv under build/compat/: install the kit the Colab way, check it moved nothing, run the suite and every
# notebook. Not part of `make test`: each stack downloads torch. COMPAT_ARGS="--stacks colab --pytest-args '...'"
compat-check: $(STAMP)
	$(BIN)/python .ci/compat_check.py --out $(BUILD)/compat $(COMPAT_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check helpers tests

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format helpers tests

clean:
	rm -rf $(BUILD)
