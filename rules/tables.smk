# Tables, figures and the report: cheap jobs that read the per-image CSVs of
# the evaluate and flops rules (so they run on the submitting host).


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
        csv=f"{RESULTS}/table{{n}}.csv",
    log:
        f"{RESULTS}/logs/table{{n}}.log",
    wildcard_constraints:
        n="[1-5]",
    params:
        harness=HARNESS,
        args=table_args,
    threads: 1
    resources:
        **SMALL,
    shell:
        "{params.harness} table {wildcards.n} --config {input.config}{params.args} "
        "--out {output.csv} > {log} 2>&1"


rule figure:
    input:
        unpack(figure_inputs),
    output:
        png=f"{RESULTS}/figure{{n}}.png",
        csv=f"{RESULTS}/figure{{n}}.csv",
    log:
        f"{RESULTS}/logs/figure{{n}}.log",
    wildcard_constraints:
        n="1|2|7",
    params:
        harness=HARNESS,
        args=figure_args,
    threads: 1
    resources:
        **SMALL,
    shell:
        "{params.harness} figure {wildcards.n} --config {input.config}{params.args} "
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
        config=ancient(RESOLVED_CONFIG),
        tables=TABLES,
        beta=f"{RESULTS}/figure7.csv",
        models=f"{RESULTS}/models.json",
        paper=PAPER_CSVS,
    output:
        md=f"{RESULTS}/report.md",
    log:
        f"{RESULTS}/logs/report.log",
    params:
        harness=HARNESS,
        results=lambda wildcards, input: Path(input.tables[0]).parent,
        paper=lambda wildcards, input: Path(input.paper[0]).parent,
    threads: 1
    resources:
        **SMALL,
    shell:
        "{params.harness} report --config {input.config} --results {params.results} "
        "--paper {params.paper} --models {input.models} --out {output.md} > {log} 2>&1"


rule all:
    default_target: True
    input:
        TABLES,
        FIGURES,
        f"{RESULTS}/report.md",
