# Training: one job per run (18 extractor x upsampler pairs and the three
# TADT-LIIF ablations). Every tadt-* run is fine-tuned from the trained
# Baseline with the same upsampler, so that checkpoint is its input.


rule train:
    input:
        unpack(train_inputs),
    output:
        ckpt=f"{RESULTS}/checkpoints/{{run}}.pth",
    log:
        csv=f"{RESULTS}/logs/train/{{run}}.csv",
        txt=f"{RESULTS}/logs/train/{{run}}.log",
    wildcard_constraints:
        run=RUN_RE,
    params:
        spec=train_spec_json,
        launcher=train_launcher,
        init=train_init_arg,
    threads: lambda wildcards: threads_for(wildcards.run)
    resources:
        mem_mb=lambda wildcards: train_mem(wildcards.run),
        runtime=lambda wildcards: train_runtime(wildcards.run),
        gpu=lambda wildcards: gpus_for(wildcards.run) or None,
    shell:
        "{params.launcher} train --config {input.config} --run {wildcards.run} "
        "--out {output.ckpt} {params.init} --log {log.csv} --threads {threads} "
        "> {log.txt} 2>&1"
