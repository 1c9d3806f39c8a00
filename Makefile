# astroflow developer entry points. `make demo` and `make test` work on a fresh machine
# (Python 3.11 + pip); everything else is installed into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
SAMPLE := sample/night
RESULTS := results

.PHONY: install demo test lint format clean benchmark speed report

$(BIN)/activate:
	$(PY) -m venv $(VENV)

# the kernels (src/astroflow/_kernels.c) are compiled by the install: a changed one reinstalls
$(VENV)/.installed: pyproject.toml src/astroflow/_kernels.c | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/astroflow compile
	@command -v dot >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; } \
		|| echo "note: install Graphviz (apt-get install graphviz) for the flowchart's SVG/PNG"
	touch $@

install: $(VENV)/.installed

$(SAMPLE)/truth/truth.json: | $(VENV)/.installed
	$(BIN)/astroflow make-sample $(SAMPLE) --filters L,R,G,B --frames 8 --size 768x512 --seed 1

demo: $(VENV)/.installed $(SAMPLE)/truth/truth.json
	$(BIN)/snakemake --cores $(CORES) --config data=$(SAMPLE) out=$(RESULTS)
	@echo
	@echo "Final images:  $$(ls $(RESULTS)/*/final/*/*.png | tr '\n' ' ')"
	@echo "Integrations:  $$(ls $(RESULTS)/*/integration/Integration_?.fits | tr '\n' ' ')"
	@echo "Frame table:   $$(ls $(RESULTS)/*/frames.tsv)"
	@echo "Masters:       $$(ls -d $(RESULTS)/*/masters)"

# the self-contained HTML report of the demo run (final images, integrations, per-frame plots)
report: demo
	$(BIN)/snakemake --cores 1 --report report.html --config data=$(SAMPLE) out=$(RESULTS)  # into the results folder
	@echo "Report: $(RESULTS)/report.html"

test: $(VENV)/.installed
	$(BIN)/pytest -n $(CORES) -q

lint: $(VENV)/.installed
	$(BIN)/ruff check src scripts tests benchmarks
	$(BIN)/ruff format --check src scripts tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	test -f .lint-night/truth/truth.json || $(BIN)/astroflow make-sample .lint-night --frames 2 --size 64x64 >/dev/null
	$(BIN)/snakemake --lint --config data=.lint-night out=.lint-out

format: $(VENV)/.installed
	$(BIN)/ruff check --fix src scripts tests benchmarks
	$(BIN)/ruff format src scripts tests benchmarks
	$(BIN)/snakefmt Snakefile workflow/rules

benchmark: $(VENV)/.installed
	$(BIN)/python benchmarks/vs_siril.py

speed: $(VENV)/.installed
	$(BIN)/python benchmarks/speed.py

clean:
	rm -rf $(RESULTS) sample .snakemake
