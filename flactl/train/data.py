"""Data: documents → online tokenisation → packed fixed-length rows with per-document boundaries.

Pipeline for one *stream* (``data.streams`` of them, dealt to ranks and dataloader workers: see
``stream_layout``):

1. Each source yields documents of this shard only, in a deterministic order (map-style datasets: a
   seeded permutation per epoch, position ``shard, shard + S, …``; streaming datasets: the
   dataset's own shards when it has enough, else every S-th example; generated corpora: index
   ``shard + k·S``). Sources never end: a new epoch starts with a new permutation.
2. A seeded generator picks the source of each next document by its probability (mixing).
3. Documents are tokenised in groups, wrapped as ``BOS doc EOS`` and appended to a token buffer.
4. Rows of exactly ``seq_len`` tokens are cut from the buffer (no padding); a document that does not
   fit continues in the next row. Each row records where documents start, giving ``cu_seqlens``.

The position is a small picklable state (source cursors, mixing RNG, buffered tokens), saved with
every checkpoint, so resume continues with exactly the rows an uninterrupted run would have seen.

Batch layout (``micro_batch`` rows of ``seq_len``)::

    input_ids    [B, T]  long
    labels       [B, T]  long; -100 at each document's first token (never predict a new document's
                         first token from the previous one)
    position_ids [B, T]  long; restart at 0 at each segment start
    cu_seqlens   [N+1]   long; segment offsets in the flattened [1, B·T] view (row starts included),
                         for varlen models fed ``input_ids.view(1, -1)``
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from flactl.train.recipe import DataSection, RecipeError, SourceSection, resolve_files, stream_layout
from flactl.train.synthetic import generated_doc

log = logging.getLogger("flactl.train")

IGNORE_INDEX = -100


# ------------------------------------------------------------------------------------------ sources

def _text_column(ds, src: SourceSection, key: str) -> str:
    cols = list(ds.column_names or [])
    if src.text_column:
        if cols and src.text_column not in cols:
            raise RecipeError(f"{key}.text_column: {src.text_column!r} is not a column of {src.path!r} ({cols})")
        return src.text_column
    for c in ("text", "content"):
        if c in cols:
            return c
    raise RecipeError(f"{key}.text_column: {src.path!r} has no 'text' or 'content' column ({cols}); name one")


def load_hf_dataset(src: SourceSection, key: str):
    """A ``datasets`` Dataset/IterableDataset for a file or hub source (no tokenisation yet)."""
    import datasets

    if src.type in ("text", "json", "parquet"):
        files = resolve_files(src.path)
        if not files:
            raise RecipeError(f"{key}.path: no file matches {src.path!r}")
        return datasets.load_dataset(src.type, data_files=files, split="train", streaming=src.streaming)
    # hub: a dataset name, or a local folder written by save_to_disk
    if os.path.isdir(src.path) and os.path.exists(os.path.join(src.path, "state.json")):
        ds = datasets.load_from_disk(src.path)
        return ds.to_iterable_dataset() if src.streaming else ds
    return datasets.load_dataset(src.path, src.name or None, split=src.split, streaming=src.streaming)


class MapSource:
    """Documents of a map-style dataset for one shard; seeded permutation per epoch."""

    def __init__(self, ds, column: str, shard: int, nshards: int, seed: int, shuffle: bool):
        if len(ds) < nshards:
            raise RecipeError(f"data.sources: a dataset of {len(ds)} documents cannot feed {nshards} shards "
                              "(processes × data.num_workers); use fewer workers or more data")
        self.ds, self.column, self.shard, self.nshards = ds, column, shard, nshards
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.pos, self._order = 0, 0, None

    def _epoch_order(self) -> np.ndarray:
        n = len(self.ds)
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n))
        return order[self.shard::self.nshards]

    def next_docs(self, count: int) -> List[str]:
        out: List[str] = []
        while len(out) < count:
            if self._order is None:
                self._order = self._epoch_order()
            take = self._order[self.pos:self.pos + count - len(out)]
            if len(take):
                out.extend(self.ds[take.tolist()][self.column])
                self.pos += len(take)
            else:
                self.epoch, self.pos, self._order = self.epoch + 1, 0, None
        return out

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: Dict[str, int]) -> None:
        self.epoch, self.pos, self._order = s["epoch"], s["pos"], None


class StreamSource:
    """Documents of a streaming dataset for one shard. Resume skips the consumed documents."""

    def __init__(self, ds, column: str, shard: int, nshards: int, seed: int, shuffle: bool, key: str):
        self.column, self.seed, self.shuffle = column, seed, shuffle
        n = getattr(ds, "num_shards", None) or getattr(ds, "n_shards", 1)
        if n >= nshards:
            self.ds, self.stride, self.offset = ds.shard(num_shards=nshards, index=shard), 1, 0
        else:
            # Unlike flame we do not silently download everything: read the stream, keep every S-th.
            log.warning("%s: streaming dataset has %d file shard(s) < %d readers; every reader scans the "
                        "whole stream and keeps every %d-th document (correct but slower)", key, n, nshards, nshards)
            self.ds, self.stride, self.offset = ds, nshards, shard
        self.epoch, self.pos, self._it = 0, 0, None

    def _open(self) -> Iterator[str]:
        ds = self.ds
        if self.shuffle:
            ds = ds.shuffle(seed=self.seed + self.epoch, buffer_size=10_000)
        k = 0
        for i, ex in enumerate(ds):
            if i % self.stride != self.offset:
                continue
            if k >= self.pos:
                yield ex[self.column]
            k += 1

    def next_docs(self, count: int) -> List[str]:
        out: List[str] = []
        empty_epochs = 0
        while len(out) < count:
            if self._it is None:
                self._it = self._open()
                got_any = False
            try:
                out.append(next(self._it))
                self.pos += 1
                got_any = True
            except StopIteration:
                empty_epochs = 0 if got_any else empty_epochs + 1
                if empty_epochs > 1:
                    raise RuntimeError("a streaming data source yields no documents for this shard") from None
                self.epoch, self.pos, self._it = self.epoch + 1, 0, None
        return out

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: Dict[str, int]) -> None:
        self.epoch, self.pos, self._it = s["epoch"], s["pos"], None


class GeneratedSource:
    """Built-in generated corpus (``synthetic.py``); ``num_docs`` > 0 makes it a finite corpus."""

    def __init__(self, task: str, seed: int, shard: int, nshards: int, num_docs: int):
        self.task, self.seed, self.shard, self.nshards, self.num_docs = task, seed, shard, nshards, num_docs
        self.k = 0

    def next_docs(self, count: int) -> List[str]:
        out = []
        for _ in range(count):
            i = self.shard + self.k * self.nshards
            if self.num_docs:
                i %= self.num_docs
            out.append(generated_doc(self.task, self.seed, i))
            self.k += 1
        return out

    def state_dict(self) -> Dict[str, int]:
        return {"k": self.k}

    def load_state_dict(self, s: Dict[str, int]) -> None:
        self.k = s["k"]


def build_source(src: SourceSection, i: int, shard: int, nshards: int, seed: int, shuffle: bool):
    key = f"data.sources[{i}]"
    if src.type == "generated":
        return GeneratedSource(src.task, seed + 1000 * i, shard, nshards, src.num_docs)
    ds = load_hf_dataset(src, key)
    column = _text_column(ds, src, key)
    if src.streaming:
        return StreamSource(ds, column, shard, nshards, seed + i, shuffle, key)
    return MapSource(ds, column, shard, nshards, seed + i, shuffle)


# ----------------------------------------------------------------------------------------- packing

def row_segments(starts: List[int], seq_len: int, context_len: int) -> List[int]:
    """Segment offsets of one row: 0, each document start, every ``context_len`` inside long ones, T."""
    bounds = sorted(set([0, seq_len] + [s for s in starts if 0 < s < seq_len]))
    if not context_len:
        return bounds
    out = [0]
    for a, b in zip(bounds[:-1], bounds[1:]):
        out.extend(range(a + context_len, b, context_len))
        out.append(b)
    return out


class PackedStream:
    """Packed micro-batches for one shard. Iterate for batches; ``state_dict`` gives the position."""

    def __init__(self, cfg: DataSection, tokenizer, micro_batch: int, shard: int, nshards: int, seed: int):
        self.cfg, self.B, self.T = cfg, micro_batch, cfg.seq_len
        self.shard, self.nshards, self.seed = shard, nshards, seed
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        if self.bos is None and self.eos is None:
            raise RecipeError("tokenizer.path: the tokenizer has neither a BOS nor an EOS token; packed "
                              "documents could not be separated")
        self.tokenizer = tokenizer
        self.sources = [build_source(s, i, shard, nshards, seed, cfg.shuffle) for i, s in enumerate(cfg.sources)]
        p = np.array([s.prob for s in cfg.sources], dtype=np.float64)
        self.probs = p / p.sum()
        self.rng = np.random.default_rng([seed, shard, 7])
        self.buf: List[int] = []        # tokens not yet emitted
        self.starts: List[int] = []     # document-start offsets within buf

    # -- documents → buffer
    def _refill(self) -> None:
        n = self.cfg.tokenize_batch
        which = self.rng.choice(len(self.sources), size=n, p=self.probs) if len(self.sources) > 1 else np.zeros(n, int)
        docs: List[str] = []
        for si in range(len(self.sources)):
            cnt = int((which == si).sum())
            if cnt:
                docs_si = iter(self.sources[si].next_docs(cnt))
                docs.append((si, docs_si))
        # Interleave in the drawn order so mixing is per document, not per group.
        iters = dict(docs)
        texts = [next(iters[int(si)]) for si in which]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        for t in ids:
            doc = ([self.bos] if self.bos is not None else []) + list(t) + ([self.eos] if self.eos is not None else [])
            self.starts.append(len(self.buf))
            self.buf.extend(doc)

    def _row(self):
        while len(self.buf) < self.T:
            self._refill()
        row, self.buf = self.buf[:self.T], self.buf[self.T:]
        starts = [s for s in self.starts if s < self.T]
        self.starts = [s - self.T for s in self.starts if s >= self.T]
        return row, starts

    def next_batch(self) -> Dict[str, Any]:
        import torch

        T = self.T
        ids = torch.empty(self.B, T, dtype=torch.long)
        labels = torch.empty(self.B, T, dtype=torch.long)
        pos = torch.empty(self.B, T, dtype=torch.long)
        cu = [0]
        for b in range(self.B):
            row, starts = self._row()
            ids[b] = torch.tensor(row, dtype=torch.long)
            labels[b] = ids[b]
            if starts:
                labels[b, torch.tensor(starts)] = IGNORE_INDEX
            segs = row_segments(starts, T, self.cfg.context_len)
            for a, e in zip(segs[:-1], segs[1:]):
                pos[b, a:e] = torch.arange(e - a)
                cu.append(b * T + e)
        return {"input_ids": ids, "labels": labels, "position_ids": pos,
                "cu_seqlens": torch.tensor(cu, dtype=torch.long)}

    def __iter__(self):
        while True:
            yield self.next_batch()

    # -- resume
    def state_dict(self) -> Dict[str, Any]:
        return {"sources": [s.state_dict() for s in self.sources], "rng": self.rng.bit_generator.state,
                "buf": np.asarray(self.buf, dtype=np.int64), "starts": list(self.starts),
                "shard": self.shard, "nshards": self.nshards}

    def load_state_dict(self, s: Dict[str, Any]) -> None:
        if (s["shard"], s["nshards"]) != (self.shard, self.nshards):
            raise RecipeError(
                f"data: the checkpoint was written with {s['nshards']} data shards (processes × "
                f"data.num_workers) but this run has {self.nshards}; resume with the same layout")
        for src, st in zip(self.sources, s["sources"]):
            src.load_state_dict(st)
        self.rng.bit_generator.state = s["rng"]
        self.buf, self.starts = s["buf"].tolist(), list(s["starts"])


# ------------------------------------------------------------------------------- loader (workers)

class _WorkerDataset:
    """torch IterableDataset body: worker w serves local streams first + w, first + w + nw, … (mod n)."""

    def __init__(self, make_stream, states, first: int, num_workers: int):
        self.make_stream, self.states, self.first, self.nw = make_stream, states, first, num_workers

    def __iter__(self):
        import torch

        info = torch.utils.data.get_worker_info()
        w = info.id if info is not None else 0
        n = len(self.states)
        mine = [(self.first + w + self.nw * i) % n for i in range(n // self.nw)]
        streams = {}
        for j in mine:
            streams[j] = self.make_stream(j)
            if self.states[j] is not None:
                streams[j].load_state_dict(self.states[j])
        while True:
            for j in mine:
                batch = streams[j].next_batch()
                yield j, batch, streams[j].state_dict()


class ResumableLoader:
    """Micro-batches for one rank: its data streams visited in turn (see ``stream_layout``), produced
    by ``data.num_workers`` worker processes (or in-process when 0).

    torch's DataLoader hands out worker outputs round-robin and worker w owns every nw-th local
    stream, so the order is deterministic. Each batch carries its stream's position after producing
    it; ``state_dict`` holds the latest position of every local stream and which one is next. On
    resume the streams are re-dealt to the workers starting from the next one, so the worker count
    may change between runs; the process count and ``data.streams`` may not.
    """

    def __init__(self, cfg: DataSection, tokenizer, micro_batch: int, rank: int, world: int, seed: int):
        self.L, self.shards = stream_layout(cfg, rank, world)
        self.nw = cfg.num_workers
        self.cfg, self.tok, self.B, self.rank, self.world, self.seed = cfg, tokenizer, micro_batch, rank, world, seed
        self.states: List[Optional[Dict[str, Any]]] = [None] * len(self.shards)
        self.next_local = 0
        self._it = None

    def _make_stream(self, j: int) -> PackedStream:
        return PackedStream(self.cfg, self.tok, self.B, self.shards[j], self.L, self.seed)

    def _start(self):
        if self.nw == 0:
            streams = [self._make_stream(j) for j in range(len(self.shards))]
            for st, state in zip(streams, self.states):
                if state is not None:
                    st.load_state_dict(state)

            def gen():
                j = self.next_local
                while True:
                    b = streams[j].next_batch()
                    yield j, b, streams[j].state_dict()
                    j = (j + 1) % len(streams)
            return gen()
        import torch

        class _DS(_WorkerDataset, torch.utils.data.IterableDataset):
            pass

        ds = _DS(self._make_stream, list(self.states), self.next_local, self.nw)
        dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=self.nw, prefetch_factor=4,
                                         persistent_workers=False, pin_memory=False)
        return iter(dl)

    def __iter__(self):
        return self

    def __next__(self) -> Dict[str, Any]:
        if self._it is None:
            self._it = self._start()
        j, batch, state = next(self._it)
        self.states[j] = state
        self.next_local = (j + 1) % len(self.shards)
        return batch

    def state_dict(self) -> Dict[str, Any]:
        return {"states": list(self.states), "next": self.next_local, "streams": self.L,
                "world": self.world, "rank": self.rank}

    def load_state_dict(self, s: Dict[str, Any]) -> None:
        if s.get("streams") != self.L or s["world"] != self.world:
            raise RecipeError(
                f"data.streams: the checkpoint was written with {s.get('streams')} data streams over "
                f"{s['world']} process(es); resume needs the same (now {self.L} over {self.world}). "
                f"Set data.streams to the checkpoint's value to change data.num_workers.")
        self.states, self.next_local, self._it = list(s["states"]), s["next"], None
