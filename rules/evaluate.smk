# Evaluation: PSNR per image of each trained run on each dataset a table or
# figure needs (config/experiments.yaml), at the union of the scales they use
# for that dataset (one job per run and dataset), plus the bicubic floor rows.


rule evaluate:
    input:
        ckpt=f"{RESULTS}/checkpoints/{{run}}.pth",
    output:
        csv=f"{RESULTS}/eval/{{run}}/{{dataset}}.csv",
    log:
        f"{RESULTS}/logs/eval/{{run}}/{{dataset}}.log",
    wildcard_constraints:
        run=TRAINED_RE,
        dataset=DATASET_RE,
    params:
        config=job_config("evaluate"),
        harness=HARNESS,
        scales=eval_scales,
    threads: EVAL_THREADS
    resources:
        mem_mb=EVAL_MEM,
        runtime=EVAL_RUNTIME,
        gpu=lambda wildcards: EVAL_GPUS or None,
    shell:
        "{params.harness} evaluate --config {params.config:q} --checkpoint {input.ckpt} "
        "--dataset {wildcards.dataset} --scales {params.scales} --out {output.csv} --threads {threads} "
        "> {log} 2>&1"


rule evaluate_bicubic:
    output:
        csv=f"{RESULTS}/eval/bicubic/{{dataset}}.csv",
    log:
        f"{RESULTS}/logs/eval/bicubic/{{dataset}}.log",
    wildcard_constraints:
        dataset=DATASET_RE,
    params:
        config=job_config("evaluate"),
        harness=HARNESS,
        scales=bicubic_scales,
    threads: 1
    resources:
        mem_mb=EVAL_MEM,
        runtime=EVAL_RUNTIME,
    shell:
        "{params.harness} evaluate --config {params.config:q} --bicubic "
        "--dataset {wildcards.dataset} --scales {params.scales} --out {output.csv} --threads {threads} "
        "> {log} 2>&1"
