"""Training examples: removal distribution, NULL rows, targets, buckets, splits, batches."""

import numpy as np
import pytest

from primary.builds import BuildSet
from primary.examples import (
    LENGTH_BUCKETS,
    MAX_BUILD_TOKENS,
    Examples,
    bucket_length,
    iterate_batches,
    make_examples,
    max_build_tokens,
    num_batches,
    split_builds,
)
from primary.synthetic import generate_builds
from primary.vocab import ABILITIES, NULL, Vocab, WeaponVocab, tokenize_build
from primary.weapons import WEAPON_GAME_IDS


@pytest.fixture(scope="module")
def vocabs():
    return Vocab.canonical(), WeaponVocab.from_game_ids(WEAPON_GAME_IDS)


@pytest.fixture(scope="module")
def builds():
    return generate_builds(2000, seed=11)


@pytest.fixture(scope="module")
def examples(builds, vocabs):
    return make_examples(builds, *vocabs, num_instances=5, seed=0)


def _one_build(ap_by_name, weapon=40):
    ap = np.zeros((1, len(ABILITIES)), np.int16)
    for a, v in ap_by_name.items():
        ap[0, ABILITIES.index(a)] = v
    return BuildSet(np.array([weapon]), ap)


def test_largest_bucket_covers_the_longest_legal_build():
    assert MAX_BUILD_TOKENS == max_build_tokens() == 15
    assert LENGTH_BUCKETS[-1] >= MAX_BUILD_TOKENS
    # A build that reaches the maximum: 3 mains and 9 subs, each on its own ability.
    names = [a for a in ABILITIES[12:]]
    build = {a: 10 for a in names[:3]} | {a: 3 for a in names[3:12]}
    assert len(tokenize_build(build)) == 15
    assert [bucket_length(n) for n in (1, 4, 5, 8, 9, 16)] == [4, 4, 8, 8, 12, 16]
    with pytest.raises(ValueError, match="17 tokens"):
        bucket_length(17)


def test_counts_and_null_examples(builds, examples, vocabs):
    vocab, _ = vocabs
    assert len(examples) == len(builds) * 6
    assert examples.tokens.shape == (len(builds) * 6, LENGTH_BUCKETS[-1])
    assert examples.weapons.shape == (len(examples), 1)
    null_rows = (examples.lengths == 1) & (examples.tokens[:, 0] == vocab.null_id)
    assert null_rows.sum() >= len(builds)
    per_build = np.bincount(examples.build_index[null_rows], minlength=len(builds))
    assert (per_build >= 1).all()
    without = make_examples(builds, *vocabs, num_instances=5, include_null=False, seed=0)
    assert len(without) == len(builds) * 5


def test_examples_are_ordered_subsets_of_their_build(builds, examples, vocabs):
    vocab, wv = vocabs
    full_tokens = [vocab.encode(builds.tokens(i)) for i in range(len(builds))]
    weapon_ids = wv.encode_game_ids(builds.weapons)
    for e in range(0, len(examples), 37):
        b = examples.build_index[e]
        n = examples.lengths[e]
        toks = examples.tokens[e, :n].tolist()
        assert (examples.tokens[e, n:] == vocab.pad_id).all()
        assert examples.weapons[e, 0] == weapon_ids[b]
        if toks == [vocab.null_id]:
            continue
        full = full_tokens[b]
        assert 1 <= n <= len(full) - 1
        # kept tokens appear in the build's order
        positions = [full.index(t) for t in toks]
        assert positions == sorted(positions) and len(set(positions)) == n


def test_targets_are_the_full_token_set(builds, examples, vocabs):
    vocab, _ = vocabs
    assert examples.targets.shape == (len(builds), len(vocab))
    for i in range(0, len(builds), 97):
        expected = np.zeros(len(vocab), bool)
        expected[vocab.encode(builds.tokens(i))] = True
        np.testing.assert_array_equal(examples.targets[i], expected)
    assert not examples.targets[:, vocab.pad_id].any()


def test_removal_count_follows_k_to_the_skew(vocabs):
    # 400 copies of one build with 9 tokens: k in 1..8 with P(k) ~ k**1.2
    one = _one_build({"swim_speed_up": 57})
    many = BuildSet.concat([one] * 400)
    ex = make_examples(many, *vocabs, num_instances=50, include_null=False, seed=4)
    k = 9 - ex.lengths
    freq = np.bincount(k, minlength=9)[1:] / len(k)
    expected = np.arange(1, 9) ** 1.2
    expected /= expected.sum()
    # 20k draws: each frequency within 4 standard errors.
    se = np.sqrt(expected * (1 - expected) / len(k))
    assert (np.abs(freq - expected) < 4 * se).all(), (freq, expected)
    flat = make_examples(many, *vocabs, num_instances=50, include_null=False, skew_factor=0.0,
                         seed=4)
    assert abs((9 - flat.lengths).mean() - 4.5) < 0.1


def test_removed_positions_are_uniform(vocabs):
    one = _one_build({"swim_speed_up": 57})
    ex = make_examples(BuildSet.concat([one] * 200), *vocabs, num_instances=50,
                       include_null=False, seed=2)
    single = ex.lengths == 8  # exactly one token removed: which one?
    full = np.array(Vocab.canonical().encode(tokenize_build({"swim_speed_up": 57})))
    kept = ex.tokens[single, :8]
    missing = np.array([np.setdiff1d(full, row)[0] for row in kept])
    counts = np.array([(missing == t).sum() for t in full])
    assert counts.min() > 0.4 * counts.mean()


def test_single_token_build_becomes_null_input(vocabs):
    vocab, _ = vocabs
    ex = make_examples(_one_build({"ink_saver_sub": 3}), *vocabs, num_instances=3, seed=0)
    assert (ex.lengths == 1).all() and (ex.tokens[:, 0] == vocab.null_id).all()
    assert ex.targets[0, vocab.token_to_id["ink_saver_sub_3"]]
    empty = make_examples(_one_build({}), *vocabs, num_instances=2, seed=0)
    assert empty.targets[0, vocab.null_id] and empty.targets[0].sum() == 1


def test_make_examples_is_deterministic(builds, vocabs):
    a = make_examples(builds.subset(slice(0, 300)), *vocabs, seed=5)
    b = make_examples(builds.subset(slice(0, 300)), *vocabs, seed=5)
    c = make_examples(builds.subset(slice(0, 300)), *vocabs, seed=6)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)


def test_make_examples_errors(builds, vocabs):
    vocab, wv = vocabs
    with pytest.raises(ValueError, match="empty"):
        make_examples(builds.subset(slice(0, 0)), vocab, wv)
    small = WeaponVocab.from_game_ids([40])
    with pytest.raises(ValueError, match="weapon game id"):
        make_examples(builds.subset(slice(0, 50)), vocab, small)
    tiny = Vocab({"<PAD>": 0, "<NULL>": 1, "comeback": 2})
    with pytest.raises(ValueError, match="not in"):
        make_examples(builds.subset(slice(0, 5)), tiny, wv)
    with pytest.raises(ValueError, match="no examples"):
        make_examples(builds, vocab, wv, num_instances=0, include_null=False)


def test_splits_disjoint_complete_deterministic():
    tr, va, te = split_builds(1000, seed=1)
    assert (len(tr), len(va), len(te)) == (700, 100, 200)
    allidx = np.concatenate([tr, va, te])
    assert sorted(allidx.tolist()) == list(range(1000))
    again = split_builds(1000, seed=1)
    for x, y in zip((tr, va, te), again):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(tr, split_builds(1000, seed=2)[0])
    with pytest.raises(ValueError, match="summing to 1"):
        split_builds(10, 0, (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="cannot split"):
        split_builds(0, 0)


def test_batches_shapes_masks_and_targets(examples, vocabs):
    vocab, _ = vocabs
    batches = list(iterate_batches(examples, 64, seed=0, epoch=0))
    assert len(batches) == num_batches(examples, 64) == len(examples) // 64
    seen_buckets = set()
    for batch in batches[:40]:
        tok, mask = batch["tokens"], batch["key_padding_mask"]
        lb = tok.shape[1]
        seen_buckets.add(lb)
        assert lb in LENGTH_BUCKETS and tok.dtype == np.int32 and mask.dtype == bool
        assert batch["weapons"].shape == (64, 1)
        assert batch["targets"].shape == (64, len(vocab)) and batch["targets"].dtype == np.float32
        np.testing.assert_array_equal(mask, tok == vocab.pad_id)
        assert (~mask).sum(1).min() >= 1
        longest = (~mask).sum(1).max()
        assert longest <= lb and (lb == LENGTH_BUCKETS[0] or longest > LENGTH_BUCKETS[
            LENGTH_BUCKETS.index(lb) - 1])
        # every input token is in its target
        rows, cols = np.nonzero(~mask)
        real = tok[rows, cols] != vocab.null_id
        assert (batch["targets"][rows[real], tok[rows, cols][real]] == 1).all()
        assert (batch["weight"] == 1).all()
    assert len(seen_buckets) >= 1


def test_shuffle_is_deterministic_in_seed_and_epoch(examples):
    def first(seed, epoch):
        return next(iterate_batches(examples, 32, seed=seed, epoch=epoch))["tokens"]

    np.testing.assert_array_equal(first(0, 0), first(0, 0))
    assert not np.array_equal(first(0, 0), first(0, 1))
    assert not np.array_equal(first(0, 0), first(1, 0))
    plain = next(iterate_batches(examples, 32, seed=0, epoch=0, shuffle=False))
    np.testing.assert_array_equal(plain["tokens"], examples.tokens[:32, :plain["tokens"].shape[1]])


def test_last_batch_padding_with_weight_zero(examples, vocabs):
    vocab, _ = vocabs
    b = 5000
    batches = list(iterate_batches(examples, b, seed=0, epoch=0, drop_remainder=False))
    assert len(batches) == num_batches(examples, b, drop_remainder=False) == -(-len(examples) // b)
    last = batches[-1]
    real = len(examples) - b * (len(batches) - 1)
    assert last["tokens"].shape[0] == b
    assert (last["weight"][:real] == 1).all() and (last["weight"][real:] == 0).all()
    pad_rows = last["tokens"][real:]
    assert (pad_rows[:, 0] == vocab.null_id).all()
    assert (~last["key_padding_mask"][real:]).sum(1).tolist() == [1] * (b - real)
    assert (last["targets"][real:] == 0).all()
    assert sum(int(x["weight"].sum()) for x in batches) == len(examples)


def test_batch_errors(examples):
    empty = Examples(examples.tokens[:0], examples.lengths[:0], examples.weapons[:0],
                     examples.build_index[:0], examples.targets, examples.pad_id,
                     examples.null_id)
    with pytest.raises(ValueError, match="empty"):
        next(iterate_batches(empty, 8, seed=0, epoch=0))
    with pytest.raises(ValueError, match="no full batch"):
        next(iterate_batches(examples, len(examples) + 1, seed=0, epoch=0))
    with pytest.raises(ValueError, match="batch_size"):
        num_batches(examples, 0)
    assert NULL == "<NULL>"


def test_length_groups_sort_rows_and_pad_each_group_only_to_its_longest():
    from primary.examples import HARVEST_WIDTHS, harvest_width, length_groups

    lengths = np.random.default_rng(0).integers(1, 16, size=103)
    groups = length_groups(lengths, 16)
    assert [len(p) for _, p in groups] == [16] * 6 + [7]  # only the last group is short
    every = np.concatenate([p for _, p in groups])
    np.testing.assert_array_equal(np.sort(every), np.arange(103))  # each row exactly once
    assert (np.diff(lengths[every]) >= 0).all()  # in length order
    for width, pos in groups:
        assert width == harvest_width(int(lengths[pos].max())) and width in HARVEST_WIDTHS
    assert [harvest_width(n) for n in (1, 2, 3, 5, 15)] == [1, 2, 4, 6, 16]
    with pytest.raises(ValueError, match="17 tokens"):
        harvest_width(17)
    with pytest.raises(ValueError, match="group_rows"):
        length_groups(lengths, 0)


def test_model_rows_null_rows_and_epoch_order(examples):
    from primary.examples import epoch_order, model_rows, null_rows

    idx = np.flatnonzero(examples.lengths <= 3)[:50]
    rows = model_rows(examples, idx, 3)
    assert rows["tokens"].shape == rows["key_padding_mask"].shape == (50, 3)
    np.testing.assert_array_equal(rows["key_padding_mask"], rows["tokens"] == examples.pad_id)
    np.testing.assert_array_equal(rows["weapons"], examples.weapons[idx])
    with pytest.raises(ValueError, match="does not fit width 2"):
        model_rows(examples, idx, 2)
    null = null_rows(examples, np.arange(len(examples)))
    assert null.sum() == examples.num_builds  # include_null: one per build
    assert (examples.tokens[null, 0] == examples.null_id).all()
    # iterate_batches takes its batches from epoch_order, in order.
    order = epoch_order(examples, seed=4, epoch=2)
    first = next(iterate_batches(examples, 32, seed=4, epoch=2))
    np.testing.assert_array_equal(first["weapons"], examples.weapons[order[:32]])


def test_split_by_length_keeps_every_row_once_at_its_parts_width(examples, vocabs):
    from primary.examples import part_layout, split_by_length

    vocab, _ = vocabs
    layout = part_layout(examples, 64, 4, seed=0, epochs=range(3))
    widths = [w for _, w in layout]
    assert len(layout) == 4 and sum(r for r, _ in layout) == 64
    assert widths == sorted(widths) and widths[0] < widths[-1]  # short parts are narrower
    for epoch in range(3):
        for batch in iterate_batches(examples, 64, seed=0, epoch=epoch):
            parts = split_by_length(batch, layout, vocab.pad_id)
            assert [p["tokens"].shape for p in parts] == list(layout)
            lengths = np.concatenate([(~p["key_padding_mask"]).sum(1) for p in parts])
            assert (np.diff(lengths) >= 0).all()  # parts in length order
            # The same rows (tokens, weapon, targets, weight), each once.
            def rows(b):
                real = np.where(b["key_padding_mask"], -1, b["tokens"])
                keys = [tuple(r[r >= 0]) + (int(w), int(t @ (1 << np.arange(20))), float(g))
                        for r, w, t, g in zip(real, b["weapons"][:, 0],
                                              b["targets"][:, :20].astype(np.int64),
                                              b["weight"])]
                return sorted(keys)
            merged = {k: np.concatenate([p[k] for p in parts]) for k in ("weapons", "targets",
                                                                          "weight")}
            merged["tokens"] = np.concatenate([np.pad(p["tokens"], ((0, 0), (0, 16 - w)),
                                                      constant_values=vocab.pad_id)
                                               for p, w in zip(parts, widths)])
            merged["key_padding_mask"] = merged["tokens"] == vocab.pad_id
            assert rows(merged) == rows(batch)
            for p in parts:
                np.testing.assert_array_equal(p["key_padding_mask"], p["tokens"] == vocab.pad_id)
    last = max(int((~b["key_padding_mask"]).sum(1).max())
               for e in range(3) for b in iterate_batches(examples, 64, seed=0, epoch=e))
    assert widths[-1] == last

    batch = next(iterate_batches(examples, 64, seed=0, epoch=0))
    with pytest.raises(ValueError,
                       match=r"part 1 of the batch holds a row of \d+ tokens, more than its width"):
        split_by_length(batch, ((16, 16), (48, 1)), vocab.pad_id)
    with pytest.raises(ValueError, match="a batch of 64 rows does not fit the part layout"):
        split_by_length(batch, ((32, 4), (16, 16)), vocab.pad_id)
    with pytest.raises(ValueError, match="batch_size 64 does not cut into parts of whole "
                                         "multiples of 3 rows"):
        part_layout(examples, 64, 3, seed=0, epochs=[0], row_step=3)


def test_part_layout_leaves_the_fewest_padded_positions(examples):
    """Every other cut of the batch into at most as many parts pads at least as much."""
    import itertools

    from primary.examples import epoch_order, num_batches, part_layout

    layout = part_layout(examples, 16, 3, seed=1, epochs=range(2), row_step=2)
    assert all(rows % 2 == 0 for rows, _ in layout)
    need = np.zeros(16, np.int64)
    for epoch in range(2):
        order = epoch_order(examples, seed=1, epoch=epoch)
        count = num_batches(examples, 16)
        need = np.maximum(need, np.sort(examples.lengths[order[:count * 16]].reshape(count, 16),
                                        axis=1).max(axis=0))
    assert [w for _, w in layout] == [int(need[end - 1]) for end in
                                      np.cumsum([r for r, _ in layout])]

    def padded(cuts):
        return sum((b - a) * int(need[b - 1]) for a, b in zip(cuts, cuts[1:]))
    chosen = padded([0, *np.cumsum([r for r, _ in layout])])
    every = [padded([0, *inner, 16]) for k in range(3)
             for inner in itertools.combinations(range(2, 16, 2), k)]
    assert chosen == min(every) < padded([0, 16])
