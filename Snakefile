# Reproduction workflow for TADT (arbitrary-scale SR). This file only includes
# the rule modules; helpers live in rules/common.smk.
#
#   snakemake --cores all results/table1.csv                  # embedded default
#   snakemake --cores all all --configfile config/paper.yaml  # paper profile
#   snakemake --workflow-profile profiles/slurm all --configfile config/paper.yaml
#   snakemake --cores all all --configfile config/released.yaml   # released LIIF/LTE weights
#
# The configuration is validated against config/schema.yaml before any job
# starts; see docs/architecture.md for the verbs the rules call.


include: "rules/common.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/released.smk"
include: "rules/flops.smk"
include: "rules/tables.smk"
