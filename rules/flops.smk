# FLOPs per image (fvcore convention: one multiply-add = one flop). Static
# extractors are counted from the input sizes alone, with the profile's widths
# and no training; TADT runs are counted along the routing their trained TARC
# picks for each image and scale, so they need the checkpoint.


rule flops_static:
    input:
        config=ancient(RESOLVED_CONFIG),
    output:
        csv=f"{RESULTS}/flops/{{extractor}}/{{dataset}}.csv",
    log:
        f"{RESULTS}/logs/flops/{{extractor}}/{{dataset}}.log",
    wildcard_constraints:
        extractor=STATIC_RE,
        dataset=DATASET_RE,
    params:
        harness=HARNESS,
        scales=flops_scales("extractor"),
    threads: 1
    resources:
        mem_mb=FLOPS_MEM,
        runtime=FLOPS_RUNTIME,
    shell:
        "{params.harness} flops --extractor {wildcards.extractor} --dataset {wildcards.dataset} "
        "--scales {params.scales} --config {input.config} --out {output.csv} > {log} 2>&1"


rule flops_tadt:
    input:
        config=ancient(RESOLVED_CONFIG),
        ckpt=f"{RESULTS}/checkpoints/{{run}}.pth",
    output:
        csv=f"{RESULTS}/flops/{{run}}/{{dataset}}.csv",
    log:
        f"{RESULTS}/logs/flops/{{run}}/{{dataset}}.log",
    wildcard_constraints:
        run=TADT_FLOPS_RE,
        dataset=DATASET_RE,
    params:
        harness=HARNESS,
        scales=flops_scales("run"),
    threads: EVAL_THREADS
    resources:
        mem_mb=FLOPS_MEM,
        runtime=FLOPS_RUNTIME,
        gpu=lambda wildcards: EVAL_GPUS or None,
    shell:
        "{params.harness} flops --checkpoint {input.ckpt} --dataset {wildcards.dataset} "
        "--scales {params.scales} --config {input.config} --out {output.csv} > {log} 2>&1"
