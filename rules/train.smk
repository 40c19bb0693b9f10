# Training: one job per run (every extractor x upsampler pair of `pairs` and the
# TADT-LIIF ablations). Every tadt-* run is fine-tuned from the trained
# Baseline with the same upsampler, so that checkpoint is its input. The
# `config` param is the run's slice of the configuration (its resolved spec,
# data and device): changing it, and only it, retrains the run.
#
# Longer than a job may run: a training job stopped by SIGTERM (a cluster's
# wall-time limit, then SIGKILL after the site's KillWait) saves its state to
# <checkpoint>.partial, which is no output of the rule, so Snakemake keeps it
# when it cleans up the failed job; `retries` (train.max_resubmissions) runs
# the job again, and each run continues from that file; `--attempt` (the
# `attempt` resource: Snakemake's attempt number) keeps a completed run's state
# there too, since a job that completes as its time limit strikes still counts
# as failed (harness/training/preemption.py). Only the Snakemake that submits
# jobs retries them: inside a cluster job the rule gets no retries (a rule's
# retries would win over the --retries 0 that job is given). `exec` makes the
# trainer the shell's own process, so Snakemake waits for the trainer itself:
# a shell would die of the job's SIGTERM at once, and Snakemake would count
# the job as ended while the trainer is still saving.


rule train:
    input:
        unpack(train_inputs),
    output:
        ckpt=f"{RESULTS}/checkpoints/{{run}}.pth",
    log:
        csv=f"{RESULTS}/logs/train/{{run}}.csv",
        txt=f"{RESULTS}/logs/train/{{run}}.log",
    wildcard_constraints:
        run=TRAINED_RE,
    params:
        config=lambda wildcards: job_config("train", wildcards.run),
        launcher=train_launcher,
        init=train_init_arg,
    retries: CFG["train"]["max_resubmissions"] if workflow.is_main_process else 0
    threads: lambda wildcards: threads_for(wildcards.run)
    resources:
        mem_mb=lambda wildcards: train_mem(wildcards.run),
        runtime=lambda wildcards: train_runtime(wildcards.run),
        gpu=lambda wildcards: gpus_for(wildcards.run) or None,
        attempt=lambda wildcards, attempt: attempt,
    shell:
        "exec env {params.launcher} train --config {params.config:q} --run {wildcards.run} "
        "--out {output.ckpt} {params.init} --log {log.csv} --threads {threads} --attempt {resources.attempt} "
        "> {log.txt} 2>&1"
