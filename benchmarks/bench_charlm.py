"""Characters per second of the character-level LM, training and generating, beside plain torch.nn.LSTM.

The same model twice, with the same weights: lstmkit's ``CharLM`` (embedding -> ``lstmkit.LSTM`` -> linear) and
a plain PyTorch model (``nn.Embedding`` -> ``nn.LSTM`` -> ``nn.Linear``). Training: the char-LM's task on
``lstmkit.train.train`` (the real loop: contiguous batches, carried state, clipping, AdamW, its bookkeeping) against a
hand-written loop of the same steps with the plain model. Generation: ``lstmkit.apps.charlm.generate`` against
the same sampling written out for the plain model. Rounds alternate the two, and the table gives medians, so
a machine shared with other work slows both alike; the ratio is what to read.

    python benchmarks/bench_charlm.py [--rounds 5] [--steps 20] [--chars 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from lstmkit.apps import charlm
from lstmkit.apps.charlm import CharLM, CharLMConfig, TokenStreamTask, contiguous_batches
from lstmkit.train import TrainConfig, make_optimizer, train


class PlainLM(nn.Module):
    """The same model on torch.nn.LSTM."""

    def __init__(self, c: CharLMConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim)
        self.lstm = nn.LSTM(c.embedding_dim, c.hidden_size, c.num_layers, dropout=c.dropout)
        self.drop = nn.Dropout(c.dropout)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)

    def forward(self, ids, state=None):
        out, state = self.lstm(self.embedding(ids), state)
        return self.decoder(self.drop(out)), state


def plain_train(model: nn.Module, ids: torch.Tensor, config: TrainConfig, steps: int) -> float:
    """chars/s of a plain truncated-BPTT loop: the steps fit takes, without its bookkeeping."""
    optimizer = make_optimizer(model, config)
    xs, ys = contiguous_batches(ids, config.batch_size, config.seq_len, 0)
    state = None
    model.train()
    start = time.perf_counter()
    for k in range(steps):
        logits, state = model(xs[k % xs.size(0)], state)
        loss = F.cross_entropy(logits.flatten(0, 1), ys[k % xs.size(0)].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        state = tuple(s.detach() for s in state)
    return steps * config.batch_size * config.seq_len / (time.perf_counter() - start)


def lstmkit_train(model: CharLM, ids: torch.Tensor, config: TrainConfig, steps: int) -> float:
    """chars/s of the char-LM's training on the one loop (validation left out of the count, as its own chars/s
    does; nothing written, as with a run directory the checkpoints would add their time)."""
    cut = len(ids) * 9 // 10
    run = TrainConfig(**{**config.__dict__, "max_steps": steps, "eval_every": steps, "schedule": "constant"})
    task = TokenStreamTask(model, ids[:cut], ids[cut : cut + 2000], run, eval_tokens=2000)
    result = train(task, run, None, progress=False)
    return result.history[-1]["chars_per_second"]


@torch.no_grad()
def plain_generate(model: PlainLM, vocab: charlm.Vocabulary, prompt: str, length: int, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    start = time.perf_counter()
    logits, state = model(vocab.encode(prompt).view(-1, 1))
    last = logits[-1, 0]
    for _ in range(length):
        choice = int(torch.multinomial((last / 0.8).softmax(-1), 1, generator=generator))
        logits, state = model(torch.tensor([[choice]]), state)
        last = logits[-1, 0]
    return length / (time.perf_counter() - start)


def lstmkit_generate(model: CharLM, vocab: charlm.Vocabulary, prompt: str, length: int, seed: int) -> float:
    start = time.perf_counter()
    for _ in charlm.generate(model, vocab, prompt, length, temperature=0.8, seed=seed):
        pass
    return length / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--chars", type=int, default=300, help="characters generated per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    text = charlm.load_corpus("timemachine")
    vocab = charlm.Vocabulary.from_text(text)
    ids = vocab.encode(text)
    config = CharLMConfig(vocab_size=len(vocab))  # lstmkit train's default model
    train = TrainConfig(device="cpu")
    torch.manual_seed(0)
    ours = CharLM(config)
    plain = PlainLM(config)
    plain.load_state_dict(ours.state_dict())  # the same parameter names: the same model

    results: dict[str, list[float]] = {k: [] for k in ("fit", "plain train", "generate", "plain generate")}
    plain_train(plain, ids, train, 2)  # warm-up: first calls allocate
    for r in range(args.rounds):
        results["fit"].append(lstmkit_train(ours, ids, train, args.steps))
        results["plain train"].append(plain_train(plain, ids, train, args.steps))
        results["generate"].append(lstmkit_generate(ours, vocab, "the time traveller", args.chars, r))
        results["plain generate"].append(plain_generate(plain, vocab, "the time traveller", args.chars, r))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"model: embedding {config.embedding_dim} -> LSTM {config.num_layers}x{config.hidden_size} -> "
          f"{config.vocab_size} chars; batch {train.batch_size} x {train.seq_len} steps; {args.threads} thread(s); "
          f"engine {ours.lstm.engine}; torch {torch.__version__}; median of {args.rounds} rounds")
    print("| | lstmkit (chars/s) | plain torch.nn.LSTM loop (chars/s) | ratio |")
    print("|---|---|---|---|")
    print(f"| training | {med['fit']:,.0f} | {med['plain train']:,.0f} | {med['fit'] / med['plain train']:.2f} |")
    print(f"| generation (batch 1) | {med['generate']:,.0f} | {med['plain generate']:,.0f} | "
          f"{med['generate'] / med['plain generate']:.2f} |")


if __name__ == "__main__":
    main()
