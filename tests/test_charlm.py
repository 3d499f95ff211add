"""The character-level language model as a library: texts, vocabulary, batches, scoring, sampling, training."""

from __future__ import annotations

import csv
import math
import random

import pytest
import torch
import torch.nn.functional as F

from lstmkit.apps import charlm
from lstmkit.apps.charlm import (
    CharLM,
    CharLMConfig,
    DataConfig,
    RunConfig,
    Vocabulary,
    contiguous_batches,
    score_stream,
)
from lstmkit.checkpoint import save_checkpoint
from lstmkit.errors import CheckpointError, TextError
from lstmkit.train import TrainConfig, make_scheduler


def generated_text(n: int = 6000, seed: int = 0) -> str:
    """Sentences from a tiny grammar: learnable structure (words, spaces, full stops), seeded."""
    rng = random.Random(seed)
    subjects, verbs, objects = ["the cat", "a dog", "the time traveller"], ["sees", "likes", "finds"], [
        "the mat", "a bone", "the machine"]
    out = []
    while sum(map(len, out)) < n:
        out.append(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}.\n")
    return "".join(out)[:n]


TINY = dict(embedding_dim=8, hidden_size=24, num_layers=1, dropout=0.0)


# -- texts ----------------------------------------------------------------------------------------------


def test_read_texts_joins_files_and_refuses_bad_ones(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "b.txt").write_text("two\n")
    assert charlm.read_texts([tmp_path / "a.txt", tmp_path / "b.txt"]) == "one\ntwo\n"
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bin.dat").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(TextError, match="is empty"):
        charlm.read_texts([tmp_path / "empty.txt"])
    with pytest.raises(TextError, match="binary"):
        charlm.read_texts([tmp_path / "bin.dat"])
    with pytest.raises(TextError, match=r"not UTF-8 text: byte 3 \(0xe9\)"):
        charlm.read_texts([tmp_path / "latin1.txt"])
    with pytest.raises(FileNotFoundError):
        charlm.read_texts([tmp_path / "missing.txt"])
    (tmp_path / "folder" / "sub").mkdir(parents=True)
    (tmp_path / "folder" / "z.txt").write_text("last")
    (tmp_path / "folder" / "sub" / "a.txt").write_text("first\n")
    assert charlm.read_texts([tmp_path / "folder"]) == "first\nlast"  # a folder: its files, sorted by path
    assert charlm.read_texts([str(tmp_path / "folder" / "*.txt")]) == "last"  # a glob


def test_d2l_preprocessing_is_the_books():
    raw = "The Time Machine, by H. G. Wells [1898]\n\n\nI\n\nThe Time Traveller (for so it will be"
    assert charlm.preprocess(raw, "d2l") == "the time machine by h g wells i the time traveller for so it will be"
    assert charlm.preprocess("The Time ", "d2l", strip=False) == "the time "
    assert charlm.preprocess(raw, "none") == raw


def test_builtin_corpora_need_no_download():
    tm = charlm.load_corpus("timemachine")
    assert tm.startswith("The Time Machine, by H. G. Wells") and 170_000 < len(tm) < 190_000
    assert set(charlm.preprocess(tm, "d2l")) == set("abcdefghijklmnopqrstuvwxyz ")
    small = charlm.stdlib_text(cap=20_000)
    assert len(small) == 20_000 and small == charlm.stdlib_text(cap=20_000)  # capped, same order every time
    assert "def " in small and "import " in small
    with pytest.raises(TextError, match="unknown corpus"):
        charlm.load_corpus("wikipedia")


def test_vocabulary_round_trip_and_unknown_characters():
    vocab = Vocabulary.from_text("hello world")
    assert vocab.chars == tuple(sorted(set("hello world")))
    assert vocab.decode(vocab.encode("world hello")) == "world hello"
    assert vocab.decode(vocab.encode("heXlo!")) == "he\ufffdlo\ufffd"  # the unknown class


def test_the_rarest_characters_are_the_unknown_class_and_unseen_ones_join_them():
    vocab = Vocabulary.from_text("aaabbbccc d", min_count=3)
    assert vocab.chars == ("a", "b", "c") and len(vocab) == 4 and vocab.unknown_id == 3
    assert vocab.encode("ab d€").tolist() == [0, 1, 3, 3, 3]
    assert vocab.decode([0, 3, 2]) == "a\ufffdc"
    assert vocab.unknown_chars("ab d€") == [" ", "d", "€"] and vocab.count_unknown("dd€") == 3
    again = Vocabulary.from_extra(vocab.to_extra())
    assert again == vocab
    with pytest.raises(CheckpointError, match="older lstmkit .* train the model again"):
        Vocabulary.from_extra({"vocabulary": ["a", "b"]})  # a checkpoint from before the unknown class


@pytest.mark.parametrize("text", ["plain ascii", "emoji 🐕🦴", "时间旅行者", "mixed Ω and ß"])
def test_a_byte_vocabulary_covers_any_utf8(text):
    vocab = Vocabulary.from_text("anything", "bytes")
    ids = vocab.encode(text)
    assert len(vocab) == 256 and ids.tolist() == list(text.encode("utf-8")) and vocab.decode(ids) == text
    assert vocab.unknown_chars(text) == [] and vocab.count_unknown(text) == 0


def _uniform(vocab: Vocabulary) -> CharLM:
    model = CharLM(CharLMConfig(vocab_size=len(vocab), **TINY))
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
    return model


@pytest.mark.parametrize("text", ["the cat sees Ω", "emoji 🐕🦴", "时间旅行者", "Ж"])
def test_bits_per_char_are_per_character_of_the_text_whatever_the_vocabulary(text):
    # Known answers: a uniform model over V symbols costs log2(V) bits a symbol, so a uniform byte model costs
    # 8 bits for each byte of each character, and a uniform character model log2(V) for every character,
    # unknown ones included.
    chars = Vocabulary.from_text("the cat", min_count=1)
    scores = charlm.evaluate(_uniform(chars), chars, text)
    assert scores["chars"] == len(text) and scores["bits_per_char"] == pytest.approx(math.log2(len(chars)), rel=1e-5)
    assert scores["unknown_chars"] == sum(ch not in "the cat" for ch in text)
    byte_vocab = Vocabulary.from_text("", "bytes")
    scores = charlm.evaluate(_uniform(byte_vocab), byte_vocab, text)
    expected = 8 * len(text.encode("utf-8")) / len(text)
    assert scores["unknown_chars"] == 0 and scores["bits_per_char"] == pytest.approx(expected, rel=1e-5)


def test_a_prompt_with_unseen_characters_is_mapped_and_said_so():
    vocab = Vocabulary.from_text("the cat", min_count=1)
    ids, note = charlm.prompt_ids(vocab, "the ™cat")
    assert ids.tolist() == vocab.encode("the ™cat").tolist() and "1 character(s)" in note and "'™'" in note
    assert charlm.prompt_ids(vocab, "the cat")[1] == ""
    model = _uniform(vocab)
    sampled = "".join(charlm.generate(model, vocab, "™", 200, seed=0))
    assert len(sampled) == 200 and "\ufffd" not in sampled  # the unknown class is never written


def test_a_checkpoint_an_older_lstmkit_wrote_is_refused_with_one_line_saying_to_retrain(tmp_path):
    vocab = Vocabulary.from_text(generated_text(500))
    model = CharLM(CharLMConfig(vocab_size=len(vocab), **TINY))
    config = RunConfig(CharLMConfig(vocab_size=len(vocab), **TINY)).to_dict()
    save_checkpoint(tmp_path / "ok", model, config, kind=charlm.KIND, extra=vocab.to_extra())
    assert charlm.load_model(tmp_path / "ok")[1] == vocab
    # Before the unknown class: a vocabulary without one.
    save_checkpoint(tmp_path / "vocab", model, config, kind=charlm.KIND, extra={"vocabulary": list(vocab.chars)})
    # Before the variants mapping: each variant a field of the model config.
    fields = {**config, "model": {**config["model"], "peephole": False}}
    del fields["model"]["variants"]
    save_checkpoint(tmp_path / "fields", model, fields, kind=charlm.KIND, extra=vocab.to_extra())
    for old in ("vocab", "fields"):
        with pytest.raises(CheckpointError, match="older lstmkit.*train the model again") as caught:
            charlm.load_model(tmp_path / old)
        assert "\n" not in str(caught.value)


# -- batches, scoring -----------------------------------------------------------------------------------


def test_contiguous_batches_continue_each_row_and_targets_are_the_next_token():
    ids = torch.arange(200)
    xs, ys = contiguous_batches(ids, batch_size=4, seq_len=5, offset=3)
    assert xs.shape == (9, 5, 4) and ys.shape == xs.shape  # (num_batches, T, B)
    assert torch.equal(ys, xs + 1)
    for k in range(1, xs.size(0)):
        assert torch.equal(xs[k, 0], xs[k - 1, -1] + 1)  # row b of batch k goes on where batch k-1 stopped
    assert int(xs[0, 0, 0]) == 3  # the epoch's offset


def test_score_stream_is_the_summed_cross_entropy_whatever_the_rows():
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(vocab_size=7, **TINY)).eval()
    ids = torch.randint(0, 7, (61,))
    with torch.no_grad():
        logits, _ = model(ids[:-1].view(-1, 1))
        expected = float(F.cross_entropy(logits.view(-1, 7), ids[1:], reduction="sum"))
    total, count = score_stream(model, ids, rows=1, chunk=7)  # chunks carry the state: same as one pass
    assert count == 60 and total == pytest.approx(expected, rel=1e-5)
    # Four rows scored side by side: each row's first target is predicted from a zero state.
    rows = ids[:61].view(-1)[:60].view(4, 15)
    with torch.no_grad():
        by_row = sum(
            float(F.cross_entropy(model(rows[r].view(-1, 1))[0][:, 0], ids[1 + 15 * r: 16 + 15 * r], reduction="sum"))
            for r in range(4)
        )
    total4, count4 = score_stream(model, ids, rows=4, chunk=4)
    assert count4 == 60 and total4 == pytest.approx(by_row, rel=1e-5)


def test_a_uniform_model_has_perplexity_equal_to_the_vocabulary_size():
    text = generated_text(500)
    vocab = Vocabulary.from_text(text)
    model = CharLM(CharLMConfig(vocab_size=len(vocab), **TINY))
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
    scores = charlm.evaluate(model, vocab, text)
    assert scores["chars"] == len(text) and scores["unknown_chars"] == 0
    assert scores["perplexity"] == pytest.approx(len(vocab), rel=1e-5)
    assert scores["bits_per_char"] == pytest.approx(math.log2(len(vocab)), rel=1e-5)


# -- sampling -------------------------------------------------------------------------------------------


def test_generation_carries_the_state_and_equals_recomputing_the_prefix():
    torch.manual_seed(1)
    vocab = Vocabulary.from_text("abcdefgh ")
    model = CharLM(CharLMConfig(vocab_size=len(vocab), **TINY)).eval()
    seen: list[int] = []
    hook = model.lstm.register_forward_pre_hook(lambda module, args: seen.append(args[0].size(0)))
    text = "".join(charlm.generate(model, vocab, "bad cab", 12, temperature=0))
    hook.remove()
    assert seen == [7] + [1] * 12  # the prompt once, then one character per step: the prefix never again
    # Greedy decoding by recomputing the whole prefix at every step gives the same characters.
    ids = vocab.encode("bad cab").tolist()
    with torch.no_grad():
        for _ in range(12):
            logits, _ = model(torch.tensor(ids).view(-1, 1))
            ids.append(int(logits[-1, 0].argmax()))
    assert text == vocab.decode(ids[7:])


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    torch.manual_seed(2)
    vocab = Vocabulary.from_text("abcdefgh ")
    model = CharLM(CharLMConfig(vocab_size=len(vocab), **TINY)).eval()

    def sample(**kw):
        return "".join(charlm.generate(model, vocab, "abc", 40, **kw))

    assert sample(temperature=1.0, seed=5) == sample(temperature=1.0, seed=5)
    assert sample(temperature=1.0, seed=5) != sample(temperature=1.0, seed=6)
    assert sample(temperature=1.5, top_k=1, seed=7) == sample(temperature=0)
    unseen = "".join(charlm.generate(model, vocab, "xyz", 30, seed=1))  # a prompt of unknown characters
    assert len(unseen) == 30 and set(unseen) <= set("abcdefgh ")  # the unknown class is never written
    with pytest.raises(ValueError, match="temperature"):
        list(charlm.generate(model, vocab, "abc", 3, temperature=-1))


# -- configs and training -------------------------------------------------------------------------------


def test_the_d2l_recipe_is_the_books_settings():
    model, data, train = charlm.d2l_recipe()
    assert (model.embedding_dim, model.hidden_size, model.num_layers, model.dropout) == (0, 256, 1, 0.0)
    assert (data.preprocess, data.train_chars, data.corpus) == ("d2l", 10_000, "timemachine")
    assert (data.seq_len, data.batch_size, train.optimizer, train.lr, train.clip, train.max_epochs) == (
        35, 32, "sgd", 1.0, 1.0, 500)
    assert train.schedule == "constant" and train.weight_decay == 0 and train.eval_every == 0


def test_configs_refuse_nonsense_and_survive_json():
    with pytest.raises(ValueError, match="hidden_size"):
        CharLMConfig(vocab_size=5, hidden_size=0)
    with pytest.raises(ValueError, match="peephole"):
        CharLMConfig(vocab_size=5, variants={"cell": "slstm", "peephole": True})
    with pytest.raises(ValueError, match="zonout"):
        CharLMConfig(vocab_size=5, variants={"zonout": 0.1})
    with pytest.raises(ValueError, match="batch_size"):
        DataConfig(batch_size=0)
    with pytest.raises(ValueError, match="cosine"):
        TrainConfig(schedule="cosine")
    run = RunConfig(CharLMConfig(vocab_size=5, variants={"layer_norm": True, "zoneout": 0.1}),
                    DataConfig(corpus=None, texts=("a.txt",)))
    assert RunConfig.from_dict(run.to_dict()) == run


def test_cosine_schedule_warms_up_then_ends_at_a_tenth():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = make_scheduler(opt, TrainConfig(lr=1.0, schedule="cosine", warmup_steps=4, max_steps=20), 20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs.append(opt.param_groups[0]["lr"])
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))


def _run(tmp_path, text: str, **train) -> RunConfig:
    (tmp_path / "text.txt").write_text(text)
    settings = dict(eval_every=10, patience=0, lr=3e-2, device="cpu")
    settings.update(train)
    return RunConfig(
        CharLMConfig(vocab_size=1, embedding_dim=8, hidden_size=32, num_layers=2, dropout=0.1),
        DataConfig(corpus=None, texts=(str(tmp_path / "text.txt"),), seq_len=16, batch_size=8),
        TrainConfig(**settings),
    )


def test_a_resumed_run_keeps_the_engine_its_checkpoint_records(tmp_path, monkeypatch):
    # The first half trains where "auto" resolves to the reference engine; the resumed half runs where it would
    # resolve to torch's kernel (another machine, another tuning): the recorded engine is pinned, and the weights
    # are those of one run on the reference engine throughout, bit for bit.
    from lstmkit import engines
    from lstmkit.checkpoint import load_checkpoint

    text = generated_text(3000)
    whole = _run(tmp_path, text, max_steps=40, schedule="constant")
    first = _run(tmp_path, text, max_steps=20, schedule="constant")
    with monkeypatch.context() as patch:
        patch.setattr(engines.choice, "AUTO_ORDER", ("reference", "native", "fused"))
        charlm.train_charlm(whole, tmp_path / "whole", progress=False)
        charlm.train_charlm(first, tmp_path / "parts", progress=False)
    assert load_checkpoint(tmp_path / "parts" / "last", kind=charlm.KIND).extra["engine"] == "reference"
    assert engines.AUTO_ORDER[0] != "reference"
    charlm.train_charlm(whole, tmp_path / "parts", resume=True, progress=False)
    assert load_checkpoint(tmp_path / "parts" / "last", kind=charlm.KIND).extra["engine"] == "reference"
    a, _, _ = charlm.load_model(tmp_path / "whole" / "last")
    b, _, _ = charlm.load_model(tmp_path / "parts" / "last")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_training_learns_the_text_and_writes_its_run_directory(tmp_path):
    text = generated_text(6000)
    run = _run(tmp_path, text, max_steps=60)
    result = charlm.train_charlm(run, tmp_path / "out", progress=False)
    uniform = math.log(len(set(text)))
    assert result.steps == 60 and result.stopped == "max_steps"
    assert result.best_val_loss < 0.4 * uniform  # far below chance: it learned the grammar's words
    with open(tmp_path / "out" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40, 50, 60]
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert (tmp_path / "out" / "curves.png").read_bytes().startswith(b"\x89PNG")
    model, vocab, saved = charlm.load_model(tmp_path / "out")
    assert saved.model.vocab_size == len(vocab) == len(set(text)) + 1  # and the unknown class
    assert charlm.evaluate(model, vocab, text[-600:])["bits_per_char"] < 0.6 * math.log2(len(vocab))


def test_resume_continues_exactly(tmp_path):
    # One run of 40 steps, and one stopped at 20 then resumed to 40: the same weights, bit for bit. The
    # schedule is constant so that the first half's shorter budget does not change the learning rate, and
    # dropout is on so that the RNG state must be restored too. (The SIGKILL test in test_cli_train.py uses
    # the same budget throughout, with the default cosine schedule.)
    text = generated_text(3000)
    whole = _run(tmp_path, text, max_steps=40, schedule="constant")
    charlm.train_charlm(whole, tmp_path / "whole", progress=False)
    first = _run(tmp_path, text, max_steps=20, schedule="constant")
    charlm.train_charlm(first, tmp_path / "parts", progress=False)
    charlm.train_charlm(whole, tmp_path / "parts", resume=True, progress=False)
    a, _, _ = charlm.load_model(tmp_path / "whole" / "last")
    b, _, _ = charlm.load_model(tmp_path / "parts" / "last")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert (tmp_path / "whole" / "metrics.csv").read_text().count("\n") == 5
    with pytest.raises(TextError, match="differs"):
        charlm.train_charlm(_run(tmp_path, text[:-5], max_steps=60), tmp_path / "parts", resume=True, progress=False)
