"""Recipe validation: bad recipes fail before any compute, with a message naming the key."""
from __future__ import annotations

import glob
import os

import pytest

from flactl.train.recipe import RecipeError, load_recipe, parse_override, plan_batch, recipe_from_dict
from train_helpers import tiny_recipe, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _err(table, overrides=None) -> str:
    with pytest.raises(RecipeError) as e:
        recipe_from_dict(table, overrides)
    return str(e.value)


def test_unknown_keys_name_the_key_with_a_hint(tmp_path):
    t = tiny_recipe(tmp_path)
    t["optim"]["learning_rate"] = 1e-3
    msg = _err(t)
    assert msg.startswith("optim.learning_rate: unknown key")
    t = tiny_recipe(tmp_path)
    t["data"]["sources"][0]["prb"] = 0.5
    msg = _err(t)
    assert msg.startswith("data.sources[0].prb: unknown key") and "did you mean" in msg and "prob" in msg
    t = tiny_recipe(tmp_path)
    t["trainer"] = {}
    assert _err(t).startswith("trainer: unknown key")


def test_types_and_choices(tmp_path):
    assert _err(tiny_recipe(tmp_path), ["batch.micro_batch=1.5"]).startswith("batch.micro_batch: expected an integer")
    assert _err(tiny_recipe(tmp_path), ["schedule.type=exp"]).startswith("schedule.type: 'exp' is not one of")
    assert _err(tiny_recipe(tmp_path), ["data.varlen=3"]).startswith("data.varlen: expected true or false")
    assert _err(tiny_recipe(tmp_path), ["optim.betas=[0.9]"]).startswith("optim.betas")


def test_missing_data_file_names_the_source(tmp_path):
    t = tiny_recipe(tmp_path)
    t["data"]["sources"] = [{"type": "json", "path": str(tmp_path / "nope" / "*.jsonl")}]
    assert _err(t).startswith("data.sources[0].path: no file matches")
    write_jsonl(str(tmp_path / "a.jsonl"), ["hello"])
    t["data"]["sources"] = [{"type": "json", "path": str(tmp_path / "*.jsonl")}]
    recipe_from_dict(t)  # now fine


def test_batch_not_divisible_names_the_key(tmp_path):
    r = recipe_from_dict(tiny_recipe(tmp_path, batch={"micro_batch": 4, "global_batch": 12}))
    assert plan_batch(r, 1).grad_accum == 3
    with pytest.raises(RecipeError, match=r"^batch.global_batch: 12 rows is not divisible by .* 4 × 2 = 8"):
        plan_batch(r, 2)
    t = tiny_recipe(tmp_path, batch={"micro_batch": 2, "global_batch": 0, "tokens_per_step": 100})
    assert _err(t).startswith("batch.tokens_per_step: 100 is not divisible by data.seq_len 32")
    t = tiny_recipe(tmp_path, batch={"micro_batch": 2, "global_batch": 4, "tokens_per_step": 128})
    assert _err(t).startswith("batch: give exactly one of")


def test_plan_from_token_budget(tmp_path):
    t = tiny_recipe(tmp_path, batch={"micro_batch": 2, "global_batch": 0, "tokens_per_step": 256},
                    run={"steps": 0, "tokens": 256 * 10 + 5})
    p = plan_batch(recipe_from_dict(t), 2)
    assert (p.global_batch, p.grad_accum, p.steps, p.tokens_per_step, p.total_tokens) == (8, 2, 10, 256, 2560)
    assert "tokens/step 256" in p.describe() and "total tokens 2,560" in p.describe()


def test_model_section(tmp_path):
    t = tiny_recipe(tmp_path)
    t["model"]["preset"] = "gla-340m"
    assert _err(t).startswith("model: give exactly one of")
    t = tiny_recipe(tmp_path)
    t["model"] = {"preset": "gla-9000b"}
    assert _err(t).startswith("model.preset: unknown preset")
    t = tiny_recipe(tmp_path)
    t["model"] = {"path": str(tmp_path / "missing")}
    assert _err(t).startswith("model.path:")


def test_model_config_keys_checked_against_the_family(tmp_path):
    from flactl.train.model import build_config
    from flactl.train.tokenizer import byte_tokenizer

    t = tiny_recipe(tmp_path)
    t["model"]["config"]["hiden_size"] = 64
    r = recipe_from_dict(t)
    with pytest.raises(RecipeError, match=r"^model.config.hiden_size: .* no such field \(did you mean hidden_size\?\)"):
        build_config(r.model, byte_tokenizer())
    t = tiny_recipe(tmp_path)
    t["model"]["family"] = "glaa"
    with pytest.raises(RecipeError, match=r"^model.family: 'glaa' is not a registered model_type"):
        build_config(recipe_from_dict(t).model, byte_tokenizer())
    # vocab is raised to the tokenizer's size; special ids come from the tokenizer
    t = tiny_recipe(tmp_path)
    t["model"]["config"]["vocab_size"] = 100
    cfg = build_config(recipe_from_dict(t).model, byte_tokenizer())
    assert (cfg.vocab_size, cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (259, 1, 2, 0)


def test_overrides():
    assert parse_override("optim.lr=1e-3") == (["optim", "lr"], 1e-3)
    assert parse_override("run.dir=runs/x") == (["run", "dir"], "runs/x")
    assert parse_override("optim.betas=[0.9, 0.99]") == (["optim", "betas"], [0.9, 0.99])
    with pytest.raises(RecipeError, match="expected key=value"):
        parse_override("optim.lr")


def test_override_list_entry(tmp_path):
    r = recipe_from_dict(tiny_recipe(tmp_path), ["data.sources.0.task=recall", "data.sources.0.prob=2"])
    assert r.data.sources[0].task == "recall" and r.data.sources[0].prob == 2.0
    assert _err(tiny_recipe(tmp_path), ["data.sources.3.prob=1"]).startswith("data.sources.3: index 3 out of range")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "recipes", "*.toml"))),
                         ids=lambda p: os.path.basename(p))
def test_shipped_recipes_validate(path):
    from flactl.train.model import build_config
    from flactl.train.tokenizer import byte_tokenizer

    r = load_recipe(path)
    plan_batch(r, 1)
    try:
        build_config(r.model, byte_tokenizer())
    except RecipeError as e:
        if "is not a registered model_type" in str(e):
            pytest.skip(f"{os.path.basename(path)}: flactl.models has no {r.model.family or r.model.preset} yet: {e}")
        raise
