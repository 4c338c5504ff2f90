# The two commands a new user needs: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install serve test lint proto bench clean image

# PYTHONWARNINGS=ignore on the project's install: setuptools otherwise warns, in ten lines,
# that an editable install sits beside a folder of the package's name (it does: this
# checkout). pip's own errors still show.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e '.[server,train,test]'
	touch $@

install: $(VENV)/.installed

serve: install
	$(VENV)/bin/polyhead serve $(SERVE_ARGS)

# lint (ruff, mypy over polyhead/), then pytest and the mutation check (tests/mutants: every
# planted bug must be caught) side by side, which keeps both cores busy to the end (the
# suite's Ray servers wait on their calls' hops; the check computes). pytest runs in 3 xdist workers, each
# module one unit and the modules that start Ray in-process one unit (tests/conftest.py);
# PYTEST_XDIST= runs it in one process. The mutation check's report follows pytest's; the
# target fails if either fails; stopped (Ctrl-C), it stops the mutation check too.
PYTEST_XDIST ?= -n 3 --dist loadfile
MUTANTS_LOG := $(VENV)/mutants.log
test: lint
	@$(PY) -m tests.mutants $(MUTANTS_ARGS) > $(MUTANTS_LOG) 2>&1 & mutants=$$!; \
	trap 'test -z "$$mutants" || kill $$mutants 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	$(PY) -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS); tests=$$?; \
	wait $$mutants; mutation=$$?; mutants=; \
	echo "--- the mutation check (python -m tests.mutants $(MUTANTS_ARGS)), run beside pytest:"; \
	cat $(MUTANTS_LOG); \
	test $$tests -eq 0 && test $$mutation -eq 0

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

proto: install
	$(PY) -m polyhead.server._private.gen_proto

# The cluster image (deploy/Dockerfile); push it where the RayService's pods pull from.
# CUDA: make image RAY_PLATFORM=-gpu TORCH_INDEX=https://pypi.org/simple
IMAGE ?= polyhead:0.1.0
RAY_PLATFORM ?=
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
image:
	docker build -f deploy/Dockerfile --build-arg RAY_PLATFORM=$(RAY_PLATFORM) \
		--build-arg TORCH_INDEX=$(TORCH_INDEX) -t $(IMAGE) .

clean:
	rm -rf $(VENV) build *.egg-info
