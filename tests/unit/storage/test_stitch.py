"""Pure stitching logic of the query engine: merge by seq, dedupe, gaps, trimming, channels, checksums."""

from __future__ import annotations

import numpy as np
import pytest

from neuraflow.chunk import Chunk
from neuraflow.storage import QueryError, SeqRange, TierConsistencyError, stitch, summarize
from neuraflow.storage.query import assemble
from neuraflow.testing import chunks_from_array, make_info

T0 = 1_700_000_000.0
SFREQ = 100.0


def stream(n_chunks: int = 10, size: int = 10, n_channels: int = 3, seed: int = 0) -> tuple[np.ndarray, list[Chunk]]:
    info = make_info(n_channels, SFREQ, stream_id="s", unit="uV")
    data = np.random.default_rng(seed).standard_normal((n_channels, n_chunks * size)).astype(np.float32)
    return data, chunks_from_array(data, info, [size] * n_chunks, t0_s=T0)


def test_merge_prefers_fastest_tier_and_drops_duplicates():
    _, chunks = stream()
    hot, warm, cold = chunks[6:], chunks[2:8], chunks[:4]
    out = stitch([("hot", hot), ("warm", warm), ("cold", cold)])
    assert [c.seq for c in out.chunks] == list(range(10))
    assert out.sources == {"cold": 2, "warm": 4, "hot": 4}
    assert out.duplicates == 2 + 2  # seqs 6, 7 in hot+warm; 2, 3 in warm+cold
    assert out.gaps == []
    assert all(c is hot[i - 6] for i, c in enumerate(out.chunks) if i >= 6)  # the hot copy is the one kept


def test_differing_copies_raise_naming_seq_and_tiers():
    _, chunks = stream()
    bad = chunks[3].replace(data=chunks[3].data + np.float32(1e-3))
    with pytest.raises(TierConsistencyError, match=r"seq 3 .* 'hot' .* 'warm'"):
        stitch([("hot", chunks[:5]), ("warm", [bad])])
    moved = chunks[3].replace(t0_s=chunks[3].t0_s + 0.5)
    with pytest.raises(TierConsistencyError, match="seq 3"):
        stitch([("hot", chunks[:5]), ("warm", [moved])])
    assert len(stitch([("hot", chunks[:5]), ("warm", [bad])], verify=False).chunks) == 5


def test_gaps_are_reported_with_their_time_span():
    _, chunks = stream()
    kept = [c for c in chunks if c.seq not in (3, 4, 8)]
    out = stitch([("hot", kept[4:]), ("warm", kept[:4])])
    assert [(g.first_seq, g.last_seq, g.n_missing) for g in out.gaps] == [(3, 4, 2), (8, 8, 1)]
    assert out.gaps[0].start_s == chunks[2].t_end_s and out.gaps[0].end_s == chunks[5].t0_s


def test_one_tier_fast_path_equals_the_general_merge():
    _, chunks = stream(n_chunks=12)
    kept = [c for c in chunks if c.seq not in (3, 4, 8)]
    fast = stitch([("cold", kept)])
    general = stitch([("cold", kept), ("empty", [])])
    slow = stitch([("cold", kept[:5]), ("warm", kept[5:])])
    assert fast.gaps == general.gaps == slow.gaps and [c.seq for c in fast.chunks] == [c.seq for c in slow.chunks]
    assert fast.sources == {"cold": 9} and fast.origins == ["cold"] * 9 and fast.duplicates == 0
    unsorted = stitch([("cold", kept[::-1] + kept[:1])])  # not strictly increasing: the general path
    assert [c.seq for c in unsorted.chunks] == [c.seq for c in kept] and unsorted.duplicates == 1


def test_assemble_matches_chunk_times_with_ragged_and_empty_chunks(rng):
    from neuraflow.testing import random_chunking

    info = make_info(2, 250.0, stream_id="s")
    data = rng.standard_normal((2, 900)).astype(np.float32)
    sizes = random_chunking(900, rng)
    chunks = chunks_from_array(data, info, sizes, t0_s=T0)
    chunks.insert(3, Chunk(np.zeros((2, 0), np.float32), chunks[3].t0_s, info, seq=0))  # an empty chunk
    chunks = [c.replace(seq=i) for i, c in enumerate(chunks)]
    start, end = chunks[1].t0_s + 0.001, chunks[-2].t_end_s - 0.002
    res = assemble(stitch([("cold", chunks)]), info, start, end, ["ch1"])
    times = np.concatenate([c.times_s for c in chunks])
    keep = (times >= start) & (times < end)
    assert np.array_equal(res.times_s, times[keep])  # bit for bit as Chunk.times_s
    assert np.array_equal(res.data, np.concatenate([c.data for c in chunks], axis=1)[[1]][:, keep])
    assert res.data.flags.writeable and res.sources == {"cold": sum(1 for c in chunks if c.n_samples
                                                                    and c.t_end_s > start and c.t0_s < end)}


def test_assemble_trims_to_the_span_sample_for_sample():
    data, chunks = stream()
    info = chunks[0].info
    start, end = T0 + 0.155, T0 + 0.734  # inside chunks 1 and 7
    res = assemble(stitch([("hot", chunks)]), info, start, end)
    times = T0 + np.arange(data.shape[1]) / SFREQ
    keep = (times >= start) & (times < end)
    assert np.array_equal(res.data, data[:, keep])
    assert np.allclose(res.times_s, times[keep], rtol=0, atol=1e-6)  # float64 ulp at 1.7e9 s is 2.4e-7
    assert res.to_numpy()[0].shape == (3, int(keep.sum()))


def test_channel_selection_order_and_did_you_mean():
    data, chunks = stream()
    info = chunks[0].info
    res = assemble(stitch([("hot", chunks)]), info, T0, T0 + 10, channels=["ch2", "ch0"])
    assert res.channels == ("ch2", "ch0") and res.info.units == ("uV", "uV")
    assert np.array_equal(res.data, data[[2, 0]])
    with pytest.raises(QueryError, match=r"'chh1' is not a channel .* Did you mean 'ch1'\?"):
        assemble(stitch([("hot", chunks)]), info, T0, T0 + 10, channels=["chh1"])


def test_a_layout_change_inside_the_span_is_refused():
    _, chunks = stream()
    other = make_info(2, SFREQ, stream_id="s")
    odd = Chunk(np.zeros((2, 10), np.float32), chunks[-1].t_end_s, other, seq=10)
    with pytest.raises(QueryError, match="changed layout"):
        assemble(stitch([("hot", [*chunks, odd])]), chunks[0].info, T0, T0 + 10)


def test_arrow_table_carries_channels_and_gaps():
    _, chunks = stream()
    kept = [c for c in chunks if c.seq != 5]
    res = assemble(stitch([("hot", kept)]), chunks[0].info, T0, T0 + 1.0)
    table = res.to_arrow()
    assert table.column_names == ["t_s", "ch0", "ch1", "ch2"]
    assert table.schema.metadata[b"gaps"] == b"5-5"
    assert np.array_equal(table.column("ch1").to_numpy(), res.data[1])


def test_summaries_split_runs_and_detect_any_change():
    _, chunks = stream()
    base = summarize(chunks[:3] + chunks[5:])
    assert [(r.first, r.last, r.count) for r in base] == [(0, 2, 3), (5, 9, 5)]
    assert all(isinstance(r, SeqRange) for r in base)
    assert summarize(reversed(chunks[:3] + chunks[5:])) == base  # order-free
    flipped = np.array(chunks[6].data)
    flipped[1, 4] = -flipped[1, 4]
    changed = chunks[:3] + chunks[5:6] + [chunks[6].replace(data=flipped)] + chunks[7:]
    assert summarize(changed) != base
    assert summarize(chunks[:3] + chunks[5:9]) != base  # one chunk missing
