# The released-weights tier (profile released, config/released.yaml): each released
# checkpoint found in `released.folder` (<run>.pth; listed when this file is parsed,
# nothing read or written) is evaluated like a trained run, with the same verb and
# protocol; `--released RUN` makes the verb refuse, in one line and before any work,
# a file that is not a LIIF/LTE release of RUN at the paper's widths. Tables, the
# bicubic rows and the report are the ordinary rules, writing under `results:`
# (results/released/). At any other profile this rule matches nothing.


rule evaluate_released:
    input:
        ckpt=lambda wildcards: ckpt(wildcards.run),
    output:
        csv=f"{RESULTS}/eval/{{run}}/{{dataset}}.csv",
    log:
        f"{RESULTS}/logs/eval/{{run}}/{{dataset}}.log",
    wildcard_constraints:
        run=RELEASED_RE,
        dataset=DATASET_RE,
    params:
        config=lambda wildcards: job_config("evaluate", wildcards.run),
        harness=HARNESS,
        scales=eval_scales,
    threads: EVAL_THREADS
    resources:
        mem_mb=EVAL_MEM,
        runtime=EVAL_RUNTIME,
        gpu=lambda wildcards: EVAL_GPUS or None,
    shell:
        "{params.harness} evaluate --config {params.config:q} --checkpoint {input.ckpt} "
        "--released {wildcards.run} --dataset {wildcards.dataset} --scales {params.scales} "
        "--out {output.csv} --threads {threads} > {log} 2>&1"
