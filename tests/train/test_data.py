"""Packing, document boundaries, sharding, mixing and resumable positions of the data pipeline."""
from __future__ import annotations

import pytest
import torch

from flactl.train.data import IGNORE_INDEX, MapSource, PackedStream, ResumableLoader, StreamSource, load_hf_dataset
from flactl.train.recipe import recipe_from_dict
from flactl.train.synthetic import generated_doc
from flactl.train.tokenizer import byte_tokenizer
from train_helpers import tiny_recipe, write_jsonl

TOK = byte_tokenizer()
BOS, EOS = TOK.bos_token_id, TOK.eos_token_id


def _data(tmp_path, **data):
    return recipe_from_dict(tiny_recipe(tmp_path, data=data)).data


def _check_batch(batch, T, context_len=0):
    """Every invariant a varlen model relies on, checked on one micro-batch."""
    ids, labels, pos, cu = batch["input_ids"], batch["labels"], batch["position_ids"], batch["cu_seqlens"].tolist()
    B = ids.shape[0]
    flat = ids.reshape(-1)
    assert cu[0] == 0 and cu[-1] == B * T and all(a < b for a, b in zip(cu, cu[1:])), cu
    for b in range(B):
        assert b * T in cu, "every row starts a segment (state never flows from one row to the next)"
    bos_at = (flat == BOS).nonzero().flatten().tolist()
    assert set(bos_at) <= set(cu), "a document start that is not a segment start: attention would cross it"
    assert ((labels == IGNORE_INDEX) == (ids == BOS)).all(), "labels are masked exactly at document starts"
    for a, e in zip(cu[:-1], cu[1:]):
        seg = flat[a:e]
        assert not (seg[1:] == BOS).any(), f"segment [{a}, {e}) holds a second document"
        assert (pos.reshape(-1)[a:e] == torch.arange(e - a)).all(), "positions restart per segment"
        if context_len:
            assert e - a <= context_len
    return bos_at


def test_packing_boundaries_and_content(tmp_path):
    T, B = 40, 3
    cfg = _data(tmp_path, seq_len=T)
    stream = PackedStream(cfg, TOK, B, shard=1, nshards=3, seed=5)
    rows, n_starts = [], 0
    for _ in range(6):
        batch = stream.next_batch()
        assert batch["input_ids"].shape == (B, T)
        n_starts += len(_check_batch(batch, T))
        rows.append(batch["input_ids"].reshape(-1))
    assert n_starts >= 4
    # The packed stream is exactly BOS doc EOS BOS doc EOS ... of this shard's documents, in order.
    tokens = torch.cat(rows).tolist()
    docs, cur = [], None
    for t in tokens:
        if t == BOS:
            cur = []
        elif t == EOS:
            docs.append(TOK.decode(cur))
            cur = None
        elif cur is not None:
            cur.append(t)
    expect = [generated_doc("grammar", 5, 1 + 3 * k) for k in range(len(docs))]
    assert len(docs) >= 3 and docs == expect


def test_context_len_splits_long_documents(tmp_path):
    cfg = _data(tmp_path, seq_len=64, context_len=16)
    batch = PackedStream(cfg, TOK, 2, 0, 1, seed=0).next_batch()
    _check_batch(batch, 64, context_len=16)


def test_map_source_shards_are_disjoint_and_complete(tmp_path):
    docs = [f"document number {i}" for i in range(23)]
    path = write_jsonl(str(tmp_path / "d.jsonl"), docs)
    cfg = _data(tmp_path, sources=[{"type": "json", "path": path}])
    ds = load_hf_dataset(cfg.sources[0], "data.sources[0]")
    seen = []
    for shard in range(3):
        src = MapSource(ds, "text", shard, 3, seed=1, shuffle=True)
        n = len(range(shard, 23, 3))
        got = src.next_docs(n)
        seen += got
        assert src.next_docs(1)[0] in docs and src.epoch == 1  # the next epoch starts
    assert sorted(seen) == sorted(docs)


def test_streaming_source_shards_and_resume(tmp_path):
    docs = [f"line {i}" for i in range(17)]
    path = write_jsonl(str(tmp_path / "d.jsonl"), docs)
    cfg = _data(tmp_path, sources=[{"type": "json", "path": path, "streaming": True}])
    ds = load_hf_dataset(cfg.sources[0], "data.sources[0]")
    got = []
    for shard in range(2):
        src = StreamSource(ds, "text", shard, 2, seed=0, shuffle=False, key="data.sources[0]")
        got += src.next_docs(len(range(shard, 17, 2)))
    assert sorted(got) == sorted(docs)
    a = StreamSource(ds, "text", 1, 2, seed=0, shuffle=True, key="k")
    a.next_docs(3)
    b = StreamSource(ds, "text", 1, 2, seed=0, shuffle=True, key="k")
    b.load_state_dict(a.state_dict())
    assert a.next_docs(4) == b.next_docs(4)


def test_mixing_follows_probabilities(tmp_path):
    cfg = _data(tmp_path, seq_len=256, sources=[{"type": "generated", "task": "grammar", "prob": 3.0},
                                                {"type": "generated", "task": "recall", "prob": 1.0}])
    stream = PackedStream(cfg, TOK, 4, 0, 1, seed=0)
    text = TOK.decode(torch.cat([stream.next_batch()["input_ids"].reshape(-1) for _ in range(40)]).tolist())
    n_recall, n_all = text.count("?"), text.count("</s>")
    assert n_all > 300
    assert abs(n_recall / n_all - 0.25) < 0.06, (n_recall, n_all)


def _batches_equal(xs, ys):
    return all(torch.equal(x[k], y[k]) for x, y in zip(xs, ys) for k in x)


def test_packed_stream_resume(tmp_path):
    path = write_jsonl(str(tmp_path / "d.jsonl"), [f"some local text {i} " * (i % 7 + 1) for i in range(40)])
    cfg = _data(tmp_path, seq_len=24, sources=[{"type": "generated", "task": "recall", "prob": 1.0},
                                               {"type": "json", "path": path, "prob": 1.0}], tokenize_batch=5)
    a = PackedStream(cfg, TOK, 2, 0, 2, seed=3)
    for _ in range(3):
        a.next_batch()
    state = a.state_dict()
    rest = [a.next_batch() for _ in range(4)]
    b = PackedStream(cfg, TOK, 2, 0, 2, seed=3)
    b.load_state_dict(state)
    assert _batches_equal(rest, [b.next_batch() for _ in range(4)])
    c = PackedStream(cfg, TOK, 2, 1, 3, seed=3)
    with pytest.raises(ValueError, match="data shards"):
        c.load_state_dict(state)


@pytest.mark.timeout(300)
def test_loader_with_workers_resumes_exactly(tmp_path):
    """Two dataloader worker processes; the position saved mid-way resumes with the same batches, with or
    without workers (the positions belong to the data streams, not to the workers)."""
    cfg = _data(tmp_path, seq_len=16, num_workers=2, streams=4)
    a = ResumableLoader(cfg, TOK, 2, rank=1, world=2, seed=0)
    first = [next(a) for _ in range(5)]
    state = a.state_dict()
    rest = [next(a) for _ in range(3)]
    b = ResumableLoader(cfg, TOK, 2, rank=1, world=2, seed=0)
    b.load_state_dict(state)
    assert _batches_equal(rest, [next(b) for _ in range(3)])
    # Workers serve distinct shards: no row repeats across the two workers.
    rows = [tuple(r.tolist()) for x in first + rest for r in x["input_ids"]]
    assert len(set(rows)) == len(rows)
    # The streams' positions do not depend on the workers: an in-process loader resumes the same rows.
    c = ResumableLoader(_data(tmp_path, seq_len=16, num_workers=0, streams=4), TOK, 2, rank=1, world=2, seed=0)
    c.load_state_dict(state)
    assert _batches_equal(rest, [next(c) for _ in range(3)])
    # A different stream layout is refused, naming the key.
    d = ResumableLoader(_data(tmp_path, seq_len=16, num_workers=2, streams=8), TOK, 2, rank=1, world=2, seed=0)
    with pytest.raises(ValueError, match="data.streams"):
        d.load_state_dict(state)


@pytest.mark.timeout(300)
def test_fixed_streams_give_the_same_global_batches_for_any_process_count(tmp_path):
    """data.streams=4: 1 process × 4 micro-steps, 2 × 2 and 4 × 1 see the same micro-batches per step."""
    cfg = _data(tmp_path, seq_len=16, num_workers=0, streams=4)
    steps, per_step = 3, 4

    def global_batches(world, workers=0):
        c = _data(tmp_path, seq_len=16, num_workers=workers, streams=4)
        loaders = [ResumableLoader(c, TOK, 2, rank=r, world=world, seed=0) for r in range(world)]
        out = []
        for _ in range(steps):
            step = []
            for _a in range(per_step // world):
                step += [next(ld)["input_ids"] for ld in loaders]  # rank-fastest global order
            out.append(torch.cat(step))
        return out

    one = global_batches(1)
    for world, workers in ((2, 0), (4, 0), (2, 2)):
        other = global_batches(world, workers)
        assert all(torch.equal(a, b) for a, b in zip(one, other)), (world, workers)
    assert len({tuple(r.tolist()) for b in one for r in b}) == steps * per_step * 2  # distinct rows
    with pytest.raises(ValueError, match="data.streams"):
        ResumableLoader(cfg, TOK, 2, rank=0, world=3, seed=0)
    with pytest.raises(ValueError, match="data.num_workers"):
        ResumableLoader(_data(tmp_path, seq_len=16, num_workers=3, streams=4), TOK, 2, rank=0, world=1, seed=0)


@pytest.mark.parametrize("kind", ["text", "parquet", "disk", "disk-streaming"])
def test_local_formats_feed_the_packer(tmp_path, kind):
    import datasets

    docs = [f"{kind} document {i} with some words" for i in range(9)]
    if kind == "text":
        path = tmp_path / "d.txt"
        path.write_text("\n".join(docs) + "\n")
        src = {"type": "text", "path": str(path)}
    elif kind == "parquet":
        path = tmp_path / "d.parquet"
        datasets.Dataset.from_dict({"content": docs}).to_parquet(str(path))  # 'content' column is found too
        src = {"type": "parquet", "path": str(path)}
    else:
        datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(tmp_path / "saved"))
        src = {"type": "hub", "path": str(tmp_path / "saved"), "streaming": kind == "disk-streaming"}
    cfg = _data(tmp_path, seq_len=64, shuffle=False, tokenize_batch=4, sources=[src])
    stream = PackedStream(cfg, TOK, 2, 0, 1, seed=0)
    text = TOK.decode(torch.cat([stream.next_batch()["input_ids"].reshape(-1) for _ in range(3)]).tolist())
    got = [d.split("</s>")[0] for d in text.split("<s>")[1:]]
    assert got[:6] == docs[:6]
