"""The training loop end to end on the CPU (float32): learning, exact resume, varlen inputs reaching
the model, the non-finite guard, checkpoints and the HF export.

flactl's GLA runs its ops on the vectorised torch path (``force_backend("torch")``): the Triton
interpreter would take minutes for a whole model, and the ops have their own kernel tests.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from flactl.ops.utils.backend import force_backend
from flactl.train.loop import StopTraining, lr_lambda, train
from flactl.train.recipe import recipe_from_dict
from flactl.train.synthetic import generated_doc
from train_helpers import read_log, tiny_recipe


@pytest.fixture(autouse=True)
def _torch_ops():
    with force_backend("torch"):
        yield


def _run(table, **kw):
    return train(recipe_from_dict(table), echo=lambda s: None, **kw)


def _unigram_entropy(task: str, n: int = 500) -> float:
    from collections import Counter

    c = Counter(b for i in range(n) for b in generated_doc(task, 0, i).encode())
    total = sum(c.values())
    return -sum(v / total * math.log(v / total) for v in c.values())


@pytest.mark.timeout(600)
def test_tiny_gla_learns_the_grammar(tmp_path):
    """Loss must fall well below the byte-unigram entropy (≈ 2.8 nats): the model learned words/grammar."""
    h = _unigram_entropy("grammar")
    table = tiny_recipe(tmp_path, run={"steps": 80, "seed": 0}, data={"seq_len": 64},
                        batch={"micro_batch": 4, "global_batch": 4}, optim={"lr": 1e-2},
                        schedule={"type": "cosine", "warmup_steps": 8}, checkpoint={"every": 1000})
    res = _run(table)
    losses = [res.losses[s] for s in sorted(res.losses)]
    final = sum(losses[-5:]) / 5
    assert losses[0] > h, "start near log(vocab): the test would be meaningless otherwise"
    assert final < 0.75 * h, f"final loss {final:.3f} not below 0.75 × unigram entropy {h:.3f}"


def test_kill_and_resume_is_bitwise_identical(tmp_path):
    full = tiny_recipe(tmp_path / "full", run={"steps": 6})
    ref = _run(full)
    assert sorted(ref.losses) == [1, 2, 3, 4, 5, 6]

    part = tiny_recipe(tmp_path / "part", run={"steps": 6})
    with pytest.raises(StopTraining):
        _run(part, stop_after=3)  # killed after step 3; last checkpoint at step 2
    res = _run(part)  # the same command again
    assert res.resumed_from == 2 and sorted(res.losses) == [3, 4, 5, 6]
    for s in (3, 4, 5, 6):
        assert res.losses[s] == ref.losses[s], f"step {s}: {res.losses[s]!r} != {ref.losses[s]!r}"
    # The log holds each step once (the killed run's step 3 was dropped on resume), same values.
    log = read_log(str(tmp_path / "part"))
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in log] == [ref.losses[s] for s in range(1, 7)]
    # keep_last = 2: only the last two checkpoints remain, no temporary folder.
    assert sorted(os.listdir(tmp_path / "part" / "checkpoints")) == ["step-00000004", "step-00000006"]
    # Rerunning a finished run does nothing more.
    again = _run(part)
    assert again.resumed_from == 6 and again.losses == {}


def test_varlen_inputs_reach_the_model_and_never_cross_documents(tmp_path):
    seen = []

    def on_model(model):
        model.register_forward_pre_hook(lambda m, a, kw: seen.append({k: v for k, v in kw.items()}), with_kwargs=True)
        seen.append(model)

    table = tiny_recipe(tmp_path, run={"steps": 2}, data={"seq_len": 48}, checkpoint={"every": 100})
    _run(table, on_model=on_model)
    model, calls = seen[0], seen[1:]
    assert len(calls) == 4  # 2 steps × grad_accum 2
    bos, n_starts = 1, 0
    for kw in calls:
        ids, cu = kw["input_ids"], kw["cu_seqlens"]
        assert ids.shape == (1, 2 * 48) and kw["labels"].shape == ids.shape
        starts = (ids[0] == bos).nonzero().flatten().tolist()
        assert set(starts) <= set(cu.tolist()) and 48 in cu.tolist()
        n_starts += len(starts)
    assert n_starts >= 2
    # The model sees exactly these boundaries: changing tokens of one segment leaves every other
    # segment's logits unchanged (bitwise), while its own change.
    kw = calls[-1]
    ids, cu = kw["input_ids"], kw["cu_seqlens"].tolist()
    a, e = cu[0], cu[1]
    ids2 = ids.clone()
    ids2[0, a:e] = torch.randint(3, 259, (e - a,))
    model.eval()
    with torch.no_grad():
        la = model(input_ids=ids, cu_seqlens=kw["cu_seqlens"]).logits
        lb = model(input_ids=ids2, cu_seqlens=kw["cu_seqlens"]).logits
    assert torch.equal(la[0, e:], lb[0, e:])
    assert not torch.equal(la[0, a:e], lb[0, a:e])


def test_model_without_cu_seqlens_gets_rows(tmp_path):
    calls, said = [], []
    table = tiny_recipe(tmp_path, model="llama", run={"steps": 1}, checkpoint={"every": 100})
    train(recipe_from_dict(table), echo=said.append,
          on_model=lambda m: m.register_forward_pre_hook(lambda mod, a, kw: calls.append(kw), with_kwargs=True))
    assert calls and all(c["input_ids"].shape == (2, 32) and "cu_seqlens" not in c for c in calls)
    assert any("no cu_seqlens parameter" in s for s in said), "falling back to rows must be announced"


def _nan_at(steps_bad, micro_per_step=2):
    """on_model hook: the LM head outputs NaN during the given optimizer steps."""
    count = {"calls": 0}

    def on_model(model):
        def hook(mod, inputs, out):
            step = count["calls"] // micro_per_step + 1
            count["calls"] += 1
            return out * float("nan") if step in steps_bad else out
        model.get_output_embeddings().register_forward_hook(hook)
    return on_model


def test_nonfinite_steps_are_skipped_then_training_stops(tmp_path):
    table = tiny_recipe(tmp_path / "a", run={"steps": 5}, train={"max_bad_steps": 3}, checkpoint={"every": 100})
    res = _run(table, on_model=_nan_at({2, 3}))
    assert res.skipped == 2 and res.steps == 5
    assert all(math.isfinite(res.losses[s]) for s in (1, 4, 5)) and math.isnan(res.losses[2])
    log = read_log(str(tmp_path / "a"))
    assert log[-1]["skipped"] == 2

    table = tiny_recipe(tmp_path / "b", run={"steps": 5}, train={"max_bad_steps": 2}, checkpoint={"every": 100})
    with pytest.raises(RuntimeError, match=r"step 3: .* not finite \(2 consecutive\)"):
        _run(table, on_model=_nan_at({2, 3, 4, 5}))
    dumped = torch.load(tmp_path / "b" / "bad_batch_step3_rank0.pt")
    assert dumped["input_ids"].shape == (2, 32)


def test_export_is_a_loadable_hf_directory(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    held = []
    table = tiny_recipe(tmp_path, run={"steps": 2}, checkpoint={"every": 100, "export": True})
    res = _run(table, on_model=held.append)
    assert res.export_dir == os.path.join(str(tmp_path), "final")
    tok = AutoTokenizer.from_pretrained(res.export_dir)
    loaded = AutoModelForCausalLM.from_pretrained(res.export_dir)
    assert type(loaded).__name__ == "GLAForCausalLM"
    ids = torch.tensor([tok("the big cat sees a dog .")["input_ids"]])
    held[0].eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, held[0](input_ids=ids).logits)


def test_lr_schedules():
    cos = lr_lambda("cosine", 100, 10, 0.1, 0.1, "linear")
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(99) == pytest.approx(0.1) and cos(54) == pytest.approx(0.55, abs=0.01)
    lin = lr_lambda("linear", 100, 0, 0.0, 0.1, "cosine")
    assert lin(49) == pytest.approx(0.5) and lin(99) == pytest.approx(0.0)
    wsd = lr_lambda("wsd", 100, 10, 0.0, 0.2, "linear")
    assert wsd(50) == 1.0 and wsd(79) == 1.0 and wsd(89) == pytest.approx(0.5) and wsd(99) == pytest.approx(0.0)
    assert lr_lambda("constant", 100, 0, 0.1, 0.1, "linear")(99) == 1.0


def test_activation_checkpointing_gives_the_same_losses(tmp_path):
    plain = _run(tiny_recipe(tmp_path / "a", run={"steps": 2}, checkpoint={"every": 100}))
    held = []
    ckpt = _run(tiny_recipe(tmp_path / "b", run={"steps": 2}, checkpoint={"every": 100},
                            train={"activation_checkpointing": True}), on_model=held.append)
    m = held[0]
    assert (m.is_activation_checkpointing if hasattr(type(m), "is_activation_checkpointing")
            else m.is_gradient_checkpointing)
    assert plain.losses == ckpt.losses


def test_watchdog_prints_stacks_when_no_step_finishes(tmp_path, capfd):
    import time

    def on_model(model):
        slept = []

        def hook(mod, args):
            if not slept:
                slept.append(1)
                time.sleep(1.5)
        model.register_forward_pre_hook(hook)

    _run(tiny_recipe(tmp_path, run={"steps": 1}, train={"watchdog_s": 0.4}, checkpoint={"every": 100}),
         on_model=on_model)
    err = capfd.readouterr().err
    assert "[flactl watchdog] rank 0: no training step finished" in err and "Thread" in err


def test_flops_are_architecture_aware():
    from transformers import AutoConfig, AutoModelForCausalLM

    from flactl.train.flops import linear_params, train_flops_per_token

    def model(family, **cfg):
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **cfg))

    gla = model("gla", hidden_size=64, num_hidden_layers=2, num_heads=2, vocab_size=320)
    tf = model("transformer", hidden_size=64, num_hidden_layers=2, num_heads=2, vocab_size=320)
    # Linear attention: cost per token independent of the context length; softmax attention grows.
    assert train_flops_per_token(gla, 512) == train_flops_per_token(gla, 8192)
    assert train_flops_per_token(tf, 8192) > train_flops_per_token(tf, 512) > 6 * linear_params(tf)
    # GLA mixing term: 2 layers × 2 heads × (2·64·(16+32) + 4·16·32), ×3 for fwd+bwd.
    assert train_flops_per_token(gla, 512) == 3 * (2 * linear_params(gla) + 2 * 2 * (2 * 64 * 48 + 4 * 16 * 32))
    # A family without a FLOPs model gets None: no MFU rather than a wrong one.
    neox = model("gpt_neox", hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                 vocab_size=320)
    assert train_flops_per_token(neox, 512) is None


def test_continue_from_an_exported_model_directory(tmp_path):
    from transformers import AutoModelForCausalLM

    first = _run(tiny_recipe(tmp_path / "a", run={"steps": 2}, checkpoint={"every": 100, "export": True}))
    table = tiny_recipe(tmp_path / "b", run={"steps": 1}, checkpoint={"every": 100})
    table["model"] = {"path": first.export_dir}
    at_start = []
    _run(table, on_model=lambda m: at_start.append({k: v.detach().clone() for k, v in m.state_dict().items()}))
    ref = AutoModelForCausalLM.from_pretrained(first.export_dir).state_dict()
    assert at_start[0].keys() == ref.keys()
    assert all(torch.equal(at_start[0][k], ref[k]) for k in ref), "training must start from the directory's weights"
    table["model"]["config"] = {"hidden_size": 8}
    with pytest.raises(ValueError, match="model.config: not allowed with model.path"):
        recipe_from_dict(table)


@pytest.mark.parametrize("progress", ["rich", "tqdm"])
def test_progress_displays(tmp_path, progress):
    res = _run(tiny_recipe(tmp_path, run={"steps": 2}, metrics={"progress": progress, "log_every": 1},
                           checkpoint={"every": 100}))
    assert len(read_log(str(tmp_path))) == 2 and res.steps == 2


def test_missing_tracker_is_an_error(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        pytest.skip("tensorboard is installed here: the missing-package error cannot be provoked")
    with pytest.raises(ValueError, match="^metrics.tensorboard: asked for, but"):
        _run(tiny_recipe(tmp_path, metrics={"tensorboard": True}))
    assert not os.path.exists(tmp_path / "log.jsonl"), "must fail before any compute"
