# FLOPs per image (fvcore convention: one multiply-add = one flop). Static
# extractors are counted from the input sizes alone, with the profile's widths
# and no training; routed extractors (TADT) are counted per trained run along
# the routing its TARC picks for each image and scale, exactly as the
# evaluation routes it, so they need the checkpoint.


rule flops_static:
    output:
        csv=f"{RESULTS}/flops/{{extractor}}/{{dataset}}.csv",
    log:
        f"{RESULTS}/logs/flops/{{extractor}}/{{dataset}}.log",
    wildcard_constraints:
        extractor=STATIC_RE,
        dataset=DATASET_RE,
    params:
        config=lambda wildcards: job_config("flops", wildcards.extractor),
        harness=HARNESS,
        scales=flops_scales("extractor"),
    threads: 1
    resources:
        mem_mb=FLOPS_MEM,
        runtime=FLOPS_RUNTIME,
    shell:
        "{params.harness} flops --extractor {wildcards.extractor} --dataset {wildcards.dataset} "
        "--scales {params.scales} --config {params.config:q} --out {output.csv} > {log} 2>&1"


rule flops_routed:
    input:
        ckpt=f"{RESULTS}/checkpoints/{{run}}.pth",
    output:
        csv=f"{RESULTS}/flops/{{run}}/{{dataset}}.csv",
    log:
        f"{RESULTS}/logs/flops/{{run}}/{{dataset}}.log",
    wildcard_constraints:
        run=ROUTED_RE,
        dataset=DATASET_RE,
    params:
        config=job_config("flops-routed"),
        harness=HARNESS,
        scales=flops_scales("run"),
    threads: EVAL_THREADS
    resources:
        mem_mb=FLOPS_MEM,
        runtime=FLOPS_RUNTIME,
        gpu=lambda wildcards: EVAL_GPUS or None,
    shell:
        "{params.harness} flops --checkpoint {input.ckpt} --dataset {wildcards.dataset} "
        "--scales {params.scales} --config {params.config:q} --out {output.csv} > {log} 2>&1"
