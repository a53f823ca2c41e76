# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
#
# Both create .venv (with --system-site-packages, so a CUDA torch already installed on a GPU
# machine is kept and used) and install flactl into it. If no torch is importable, torch 2.13.0
# is installed: on the CPU CI machine that is a local CPU build; elsewhere pip fetches it from PyPI.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.flactl-installed
# pytest workers (the CI machine has 2 cores); each worker keeps torch to one thread.
WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: install demo test test-gpu clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@$(PY) -c "import torch" 2>/dev/null && echo "keeping installed torch: $$($(PY) -c 'import torch; print(torch.__version__)')" \
	  || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m flactl.demo

# CPU: Triton kernels run under the interpreter in float32. Exit code 5 ("no tests collected")
# is turned into a failure on purpose: an empty suite must never pass.
test: $(STAMP)
	@OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(WORKERS) --timeout 1200 $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

# The same tests on a CUDA GPU in bf16 (plus the @pytest.mark.gpu ones).
test-gpu: $(STAMP)
	FLACTL_TEST_DEVICE=cuda $(PY) -m pytest -q -x $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
