"""Token files: the same ids as encoding the text in memory, whatever the chunking; cached by their sources."""

from __future__ import annotations

import hashlib

import pytest
import torch
from test_charlm import generated_text

from lstmkit.apps.charlm import RARE, DataConfig, Vocabulary, prepare_text, read_texts, text_files, tokenfile
from lstmkit.apps.charlm import text as text_module
from lstmkit.errors import TextError


def _folder(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(generated_text(3000, seed=1) + "Ω once, € twice €")  # no final newline
    (folder / "sub" / "b.txt").write_bytes("\ufeff".encode() + "时间旅行者 🐕\n".encode() + b"x" * 50)
    (folder / "c.md").write_text(generated_text(2000, seed=2))
    (folder / ".hidden").write_text("never read")
    return folder


def test_folders_and_globs_expand_to_sorted_files(tmp_path):
    folder = _folder(tmp_path)
    assert [p.name for p in text_files([folder])] == ["a.txt", "c.md", "b.txt"]  # sorted by path; no dotfiles
    assert [p.name for p in text_files([str(folder / "*.txt")])] == ["a.txt"]
    assert [p.name for p in text_files([str(folder / "**" / "*.txt")])] == ["a.txt", "b.txt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextError, match="is a directory with no files"):
        text_files([tmp_path / "empty"])
    with pytest.raises(TextError, match="no file matches"):
        text_files([str(tmp_path / "*.nothing")])


@pytest.mark.parametrize("vocab", ["chars", "bytes"])
@pytest.mark.parametrize("chunk", [5, 1 << 22])  # 5 bytes: chunks end inside multi-byte characters
def test_a_token_file_holds_the_ids_of_the_text_in_memory(tmp_path, monkeypatch, vocab, chunk):
    monkeypatch.setattr(tokenfile, "CHUNK", chunk)
    monkeypatch.setattr(text_module, "CHUNK", chunk)
    folder = _folder(tmp_path)
    files = text_files([folder])
    tokens = tokenfile.encode_files(files, tmp_path / "cache", vocab=vocab, val_fraction=0.1, train_chars=0,
                                    min_count=RARE, progress=False)
    text = read_texts([folder])
    train, val = prepare_text(text, DataConfig(corpus=None, texts=(str(folder),), val_fraction=0.1))
    expected = Vocabulary.from_text(train, vocab, min_count=RARE)
    assert Vocabulary.from_extra(tokens.vocabulary) == expected
    assert torch.equal(tokens.ids[: tokens.split].long(), expected.encode(train))
    assert torch.equal(tokens.ids[tokens.split :].long(), expected.encode(val))
    assert tokens.ids.dtype == torch.uint8  # fewer than 256 symbols
    assert (tokens.train_chars, tokens.val_chars) == (len(train), len(val))
    assert tokens.text_sha256 == hashlib.sha256(text.encode()).hexdigest()
    if vocab == "chars":
        assert "€" not in expected.chars and "Ω" not in expected.chars  # rarer than RARE: the unknown class


def test_the_cache_is_reused_until_a_source_changes(tmp_path):
    folder = _folder(tmp_path)
    settings = dict(vocab="chars", val_fraction=0.1, train_chars=0, min_count=RARE, progress=False)
    first = tokenfile.encode_files(text_files([folder]), tmp_path / "cache", **settings)
    again = tokenfile.encode_files(text_files([folder]), tmp_path / "cache", **settings)
    assert again.path == first.path and len(list((tmp_path / "cache").glob("*.bin"))) == 1
    (folder / "c.md").write_text(generated_text(2500, seed=3))
    changed = tokenfile.encode_files(text_files([folder]), tmp_path / "cache", **settings)
    assert changed.path != first.path and changed.text_sha256 != first.text_sha256
    other = tokenfile.encode_files(text_files([folder]), tmp_path / "cache", **{**settings, "vocab": "bytes"})
    assert other.path not in (first.path, changed.path)


def test_train_chars_keeps_the_first_characters_and_the_same_validation(tmp_path):
    folder = _folder(tmp_path)
    tokens = tokenfile.encode_files(text_files([folder]), tmp_path / "cache", vocab="bytes", val_fraction=0.1,
                                    train_chars=1000, min_count=RARE, progress=False)
    text = read_texts([folder])
    assert tokens.split == 1000 and tokens.train_chars == 1000
    assert bytes(tokens.ids[:1000].tolist()) == text[:1000].encode()
    assert bytes(tokens.ids[1000:].tolist()).decode() == text[-tokens.val_chars :]


def test_bad_files_are_named(tmp_path):
    for name, data, message in (("empty.txt", b"", "is empty"), ("nul.bin", b"ab\x00c", "binary"),
                                ("latin.txt", "Déjà".encode("latin-1"), r"byte 1 \(0xe9\)")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(TextError, match=message):
            tokenfile.encode_files([tmp_path / name], tmp_path / "cache", vocab="chars", val_fraction=0.1,
                                   train_chars=0, min_count=RARE, progress=False)
