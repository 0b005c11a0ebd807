"""Training on torch.distributed, on CPUs with gloo and two processes: two ranks take the optimizer steps that
one process takes on global batches cut from the unsharded plan by a rule of this file, not by the shard_plan under
test (also with the frozen base sharded by FSDP), resume with the same world size and refuse another, evaluate to
the tags one process finds, and a rank that dies fails the job."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from data.align import build_examples
from data.batching import bucketed_plan, collate
from data.conll import read_conll
from data.labels import LabelSet
from model import load_tokenizer
from tests.conll_data import needs_conll, slice_conll
from train.config import TrainConfig, parse_args
from predictor.predictor import Predictor
from train.distributed import launched_world, shard_frozen_base, tag_on_ranks
from train.loop import train
from train.run_dir import CHECKPOINT_FILE, METRICS_FILE, read_run_info
from train.step import forward_backward, micro_batches, update
from train.optim import AdamW
from train.build import build_tagger
from train.schedule import WarmupCosine

ROOT = Path(__file__).resolve().parents[2]
RANKS = 2
JOB_TIMEOUT_S = 120  # a job that takes longer hangs: it is killed and the test fails
CPU = torch.device("cpu")

LABELS = LabelSet.from_types(["PER", "ORG", "LOC", "MISC"])  # CoNLL-2003's, as a run learns them


@pytest.fixture(scope="module")
def small_conll(tmp_path_factory, conll_dir) -> Path:
    folder = tmp_path_factory.mktemp("conll")
    slice_conll(conll_dir / "train.txt", folder / "train.txt", 48)
    slice_conll(conll_dir / "valid.txt", folder / "valid.txt", 40)
    return folder


def run_config(tiny_model: Path, small_conll: Path, out: Path, **changes) -> TrainConfig:
    """48 sentences, a global batch of 8 (4 per rank, in 2 micro-batches): 6 steps per epoch, 8 steps in all,
    evaluated at the end of each epoch and of the run; no dropout, so the ranks compute what one process does."""
    settings = dict(model=str(tiny_model), data=str(small_conll), out=str(out), window="sentence", limit=48,
                    batch_size=8, batch_tokens=None, grad_accum=2, max_steps=8, lr=1e-3, weight_decay=0.01, checkpoint_every=2,
                    head_dropout=0.0, lora_dropout=0.0, eval_max_tokens=256)
    return TrainConfig(**{**settings, **changes})


def random_tagger(config: TrainConfig) -> torch.nn.Module:
    """A tagger with random LoRA and head, so its predictions are varied rather than all O."""
    torch.manual_seed(1)
    tagger = build_tagger(config, len(LABELS), CPU)
    with torch.no_grad():
        for p in tagger.parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)
    return tagger


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, port: int, configs: dict[str, TrainConfig], results: Path) -> None:
    """One rank of the spawned job, set up as torchrun sets up a rank."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(RANKS), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # Joined here, so that the two train() calls below share it (train() leaves a group it did not join).
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    try:
        world = launched_world()
        config = configs["plain"]
        sentences, tokenizer = read_conll(Path(config.data) / "valid.txt"), load_tokenizer(config.model)
        for fsdp in (False, True):
            tagger = random_tagger(config)
            if fsdp:
                shard_frozen_base(tagger, CPU, world)
            predictor = Predictor(tagger, tokenizer, LABELS, config.tagging(), CPU)
            result = tag_on_ranks(predictor, sentences, predictor.windows(sentences), world)
            torch.save({"tags": result.tags, "f1": result.scores.f1, "loss": result.loss},
                       results / f"eval-fsdp{fsdp}-rank{rank}.pt")

        def stop_at_step_5(step: int) -> None:
            if step == 5:
                raise KeyboardInterrupt  # after the checkpoint of step 4, before the one of step 6

        try:
            train(config, on_step=stop_at_step_5)
            raise AssertionError("the run was not interrupted")
        except KeyboardInterrupt:
            pass
        dist.barrier()  # rank 0 has written the checkpoint before stopping; let no rank read it earlier
        steps: list[int] = []
        train(config, on_step=steps.append)
        assert steps[0] == 5, f"rank {rank} did not resume at step 5 but at {steps[0]}"
        for name in ("fsdp", "odd", "odd-fsdp"):
            train(configs[name])
    finally:
        dist.destroy_process_group()


def spawn_ranks(configs: dict[str, TrainConfig], results: Path) -> None:
    """Run `rank_main` in RANKS processes; fail (and kill them) if one raises or they outlast the timeout."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # inherited by the spawned ranks before they import torch
        job = mp.start_processes(rank_main, args=(free_port(), configs, results), nprocs=RANKS, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    try:
        while not job.join(timeout=max(deadline - time.monotonic(), 0)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {RANKS} ranks did not finish within {JOB_TIMEOUT_S} s")
    finally:
        for process in job.processes:
            if process.is_alive():
                process.kill()
                process.join()


@pytest.fixture(scope="module")
def two_rank_job(tmp_path_factory, tiny_model, small_conll) -> dict[str, Path]:
    """Evaluation of a random tagger on both ranks, and two-rank runs: one interrupted and resumed, one FSDP."""
    folder = tmp_path_factory.mktemp("ranks")
    outs = {name: folder / name for name in ("plain", "fsdp", "odd", "odd-fsdp", "results")}
    outs["results"].mkdir()
    # 15 sentences, one per rank and step: 8 steps, the last one idle on rank 1 (data.batching.shard_plan).
    odd = dict(limit=15, batch_size=2, grad_accum=1, max_steps=None, epochs=1)
    configs = {"plain": run_config(tiny_model, small_conll, outs["plain"]),
               "fsdp": run_config(tiny_model, small_conll, outs["fsdp"], fsdp=True),
               "odd": run_config(tiny_model, small_conll, outs["odd"], **odd),
               "odd-fsdp": run_config(tiny_model, small_conll, outs["odd-fsdp"], fsdp=True, **odd)}
    spawn_ranks(configs, outs["results"])
    return outs


def global_batches(plan: list[list[int]]) -> list[list[list[int]]]:
    """The global batches of a two-rank run, written out here rather than taken from data.batching.shard_plan: step
    t reads batches RANKS*t .. RANKS*t + RANKS - 1 of the unsharded plan, one per rank; the last step may hold
    fewer (a rank without one idles). Every example once per epoch, in the plan's order. This rule needs no batch
    split, as in the runs here: a plan of a multiple of RANKS batches, or of single examples."""
    assert len(plan) % RANKS == 0 or all(len(batch) == 1 for batch in plan), "a plan this rule does not cover"
    return [plan[step : step + RANKS] for step in range(0, len(plan), RANKS)]


def one_process_steps(config: TrainConfig) -> dict[str, torch.Tensor]:
    """The trainable tensors after the run's steps (`max_steps`, or `epochs` of them) of one process whose step is
    the global batch of `global_batches` (its ranks' shares in turn, each in the run's micro-batches), with the
    loop's optimizer, clipping and schedule."""
    torch.manual_seed(config.seed)
    tagger = build_tagger(config, len(LABELS), CPU)
    tokenizer = load_tokenizer(config.model)
    sentences = read_conll(Path(config.data) / "train.txt")[: config.limit]
    examples = build_examples(sentences, tokenizer, config.max_len, add_bos=config.add_bos, labels=LABELS)
    lengths = [len(e.input_ids) for e in examples]
    params = [p for p in tagger.parameters() if p.requires_grad]
    optimizer = AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def steps_of(epoch: int) -> list[list[list[int]]]:
        steps = global_batches(bucketed_plan(lengths, batch_size=config.batch_size // RANKS, seed=config.seed,
                                             epoch=epoch))
        assert sorted(i for step in steps for batch in step for i in batch) == list(range(len(examples)))
        return steps

    total = config.max_steps or config.epochs * len(steps_of(0))
    scheduler = WarmupCosine(optimizer, total, warmup_steps=int(config.warmup_ratio * total),
                             min_lr_ratio=config.min_lr_ratio)
    step, epoch = 0, 0
    while step < total:
        for shares in steps_of(epoch)[: total - step]:
            parts = [part for share in shares for part in micro_batches(share, config.grad_accum) if part]
            forward_backward(tagger, [collate(examples, part, tokenizer.pad_id) for part in parts], CPU, bf16=False)
            update(params, optimizer, scheduler, config.clip_grad_norm)
            step += 1
        epoch += 1
    return {name: p.detach() for name, p in tagger.named_parameters() if p.requires_grad}


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]


@needs_conll
@pytest.mark.parametrize("run", ["plain", "fsdp", "odd", "odd-fsdp"])
def test_two_ranks_take_the_steps_of_one_process(two_rank_job, run):
    saved = torch.load(two_rank_job[run] / CHECKPOINT_FILE, weights_only=False)
    assert saved["world_size"] == RANKS and saved["progress"]["step"] == 8
    config = read_run_info(two_rank_job[run])["config"]
    expected = one_process_steps(config)
    assert saved["trainable"].keys() == expected.keys()
    # atol 1e-5 is 1 % of one Adam step at lr 1e-3: Adam's normalisation can blow a near-zero gradient's rounding
    # (the ranks sum in another order) up to a few 1e-6 in the odd element.
    for name, tensor in expected.items():
        torch.testing.assert_close(saved["trainable"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    assert any("lora_B" in name and tensor.abs().max() > 1e-4 for name, tensor in expected.items()), \
        "training did not move the adapter, so the comparison proves nothing"


@needs_conll
def test_rank_0_alone_writes_the_log_once_per_step(two_rank_job):
    logged = records(two_rank_job["plain"])
    assert [(r["type"], r["step"]) for r in logged] == [("train", 1), ("eval", 6), ("eval", 8)]


@needs_conll
@pytest.mark.parametrize("fsdp", [False, True])
def test_distributed_evaluation_equals_one_process(two_rank_job, tiny_model, small_conll, fsdp):
    config = run_config(tiny_model, small_conll, two_rank_job["plain"])
    sentences = read_conll(small_conll / "valid.txt")
    alone = Predictor(random_tagger(config), load_tokenizer(tiny_model), LABELS, config.tagging(), CPU).tag(sentences)
    assert 0 < alone.scores.f1 < 100 and len({t for s in alone.tags for t in s}) > 3, "a degenerate tagger"
    for rank in range(RANKS):
        shared = torch.load(two_rank_job["results"] / f"eval-fsdp{fsdp}-rank{rank}.pt", weights_only=False)
        assert shared["tags"] == alone.tags
        assert shared["f1"] == alone.scores.f1
        assert shared["loss"] == pytest.approx(alone.loss, rel=1e-5)


@needs_conll
def test_a_checkpoint_resumes_only_with_its_world_size(two_rank_job, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = read_run_info(two_rank_job["plain"])["config"]
    with pytest.raises(ValueError, match="written by 2 process"):
        train(config)
    with pytest.raises(ValueError, match="torchrun"):
        train(dataclasses.replace(config, fsdp=True))


def test_fsdp_is_a_flag_of_the_command_line():
    assert parse_args(["--fsdp"]).fsdp and not parse_args([]).fsdp


def worker_pids(parent: int) -> list[int]:
    """Processes whose parent is `parent` (torchrun starts each rank as its child, in a session of its own)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == parent:
            pids.append(int(stat.parent.name))
    return pids


@needs_conll
def test_a_rank_that_dies_fails_the_torchrun_job(tiny_model, small_conll, tmp_path):
    """`torchrun -m train` runs; when a rank is killed (as the OOM killer would), the job ends with an error
    naming the rank and the signal instead of waiting for it."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={RANKS}",
               "-m", "train", "--model", str(tiny_model), "--data", str(small_conll), "--out", str(out),
               "--limit", "48", "--batch-size", "4", "--max-steps", "100000", "--eval-every", "100000"]
    log = tmp_path / "torchrun.log"
    with open(log, "w") as sink:
        launcher = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=sink,
                                    stderr=subprocess.STDOUT)
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not (out / METRICS_FILE).exists():  # rank 0 logs step 1: both ranks are training
            assert launcher.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        ranks = worker_pids(launcher.pid)
        assert len(ranks) == RANKS, log.read_text()
        os.kill(ranks[1], signal.SIGKILL)
        launcher.wait(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.terminate()  # torchrun stops its ranks on SIGTERM
            try:
                launcher.wait(timeout=15)
            except subprocess.TimeoutExpired:
                launcher.kill()
        for pid in ranks:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    output = log.read_text()
    assert launcher.returncode != 0
    assert "ChildFailedError" in output and f"Signal 9 (SIGKILL) received by PID {ranks[1]}" in output, output
