# Tables, figures and the report: cheap jobs that read the per-image CSVs of
# the evaluate and flops rules (so they run on the submitting host). Which
# inputs each one reads comes from the experiment manifest.


localrules:
    all,
    table,
    figure,
    models,
    report,


rule table:
    input:
        unpack(table_inputs),
    output:
        csv=f"{RESULTS}/{{name}}.csv",
    log:
        f"{RESULTS}/logs/{{name}}.log",
    wildcard_constraints:
        name=TABLE_RE,
    params:
        config=lambda wildcards: job_config("table", wildcards.name),
        harness=HARNESS,
        args=table_args,
    threads: 1
    resources:
        **SMALL,
    shell:
        "{params.harness} table {wildcards.name} --config {params.config:q}{params.args} "
        "--out {output.csv} > {log} 2>&1"


rule figure:
    input:
        unpack(figure_inputs),
    output:
        png=f"{RESULTS}/{{name}}.png",
        csv=f"{RESULTS}/{{name}}.csv",
    log:
        f"{RESULTS}/logs/{{name}}.log",
    wildcard_constraints:
        name=FIGURE_RE,
    params:
        config=lambda wildcards: job_config("figure", wildcards.name),
        harness=HARNESS,
        args=figure_args,
    threads: 1
    resources:
        **SMALL,
    shell:
        "{params.harness} figure {wildcards.name} --config {params.config:q}{params.args} "
        "--out {output.png} --data {output.csv} > {log} 2>&1"


rule models:
    output:
        json=f"{RESULTS}/models.json",
    log:
        f"{RESULTS}/logs/models.log",
    params:
        harness=HARNESS,
    threads: 1
    resources:
        **SMALL,
    shell:
        "{params.harness} models --json > {output.json}.tmp 2> {log} && mv {output.json}.tmp {output.json}"


rule report:
    input:
        tables=TABLES,
        figures=[f"{RESULTS}/{s}.csv" for s in X.claim_sources(CFG) if s in FIGURE_NAMES],
        models=f"{RESULTS}/models.json",
        paper=PAPER_CSVS,
        memory=MEMORY_CSV,
    output:
        md=f"{RESULTS}/report.md",
    log:
        f"{RESULTS}/logs/report.log",
    params:
        config=job_config("report"),
        harness=HARNESS,
        results=lambda wildcards, input: Path(input.tables[0]).parent,
        paper=lambda wildcards, input: Path(input.paper[0]).parent,
    threads: 1
    resources:
        **SMALL,
    shell:
        "{params.harness} report --config {params.config:q} --results {params.results} "
        "--paper {params.paper} --models {input.models} --memory {input.memory} --out {output.md} > {log} 2>&1"


rule all:
    default_target: True
    input:
        TABLES,
        FIGURES,
        f"{RESULTS}/report.md",
