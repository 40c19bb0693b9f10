# The two commands in the README:
#   make table1   build the environment if needed, then run results/table1.csv on the embedded default
#   make test     build the environment if needed, then run the test suite
# Also:
#   make test-slurm  the SLURM profile on a local single-node cluster (tests/slurm_local_cluster.sh;
#                 installs slurm-wlm/munge with apt as root and the [slurm] extra; about 12 min on 2 cores)
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
CORES   ?= all

.PHONY: env test test-slurm table1 all-results lint clean-results

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade-strategy only-if-needed -e '.[test]'
	@touch $(STAMP)

env: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slurm: $(STAMP)
	VENV=$(VENV) bash tests/slurm_local_cluster.sh

table1: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) results/table1.csv

all-results: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) all

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint

# The whole regression guard (tests/regression/README.md): the embedded workflow for every
# table, then every layer: exact inference on the committed checkpoints, statistical training
# (quick, and EDSR-LIIF averaged over 5 seeds), and the tables against their baseline.
.PHONY: check-regression
check-regression: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) all
	$(PY) -m harness check-regression --results results

clean-results:
	rm -rf results/* .snakemake
