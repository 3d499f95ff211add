"""Chapter 2: D2L's character-level LSTM on The Time Machine, with a short budget; then the whole book."""
# ruff: noqa: E501  (prose; the cells' code is checked in the built notebooks: ruff check notebooks/en)

from . import code, md

SLUG = "02-charlm-time-machine"
TITLE = {"en": "Train a character-level LSTM on The Time Machine", "zh-CN": "在《时间机器》上训练字符级 LSTM"}

# Chinese for the comments and docstrings of the shared code cells, applied to the zh-CN notebook only.
ZH_COMMENTS = {
    "# 1: about two minutes on a 2-core CPU; 8: close to the book's 500 epochs": '# 1：2 核 CPU 上约两分钟；8：接近书中的 500 个周期',
    '# shipped with lstmkit': '# 随 lstmkit 一起安装',
    "# D2L's cleaning": '# D2L 的预处理',
    '# D2L: the first 10,000 characters': '# D2L：前 10,000 个字符',
    '# the whole training part': '# 整个训练部分',
    '# a drop-in for torch.nn.LSTM': '# 可直接替换 torch.nn.LSTM',
    '# h_t -> scores of the next character': '# h_t -> 下一个字符的得分',
    '# (T, B, H): h_t at every step': '# (T, B, H)：每一步的 h_t',
    'exp(mean cross-entropy) of each character given the ones before it; rows read side by side.': '根据前文预测每个字符的平均交叉熵取指数；多行并排读取。',
    "D2L's sequential partitioning: (X, Y) pairs of shape (num_steps, batch_size), Y one step ahead.": 'D2L 的顺序分区：形状为 (num_steps, batch_size) 的 (X, Y)，Y 比 X 超前一步。',
    'Returns the history: (epoch, training perplexity of that epoch, held-out perplexity).': '返回历史记录：(周期, 该周期的训练困惑度, 留出困惑度)。',
    '# keep the state, cut the gradient': '# 保留状态，截断梯度',
    '# D2L clips to norm 1': '# D2L 把梯度裁剪到范数 1',
    'prompt + length characters; temperature 0 takes the most likely character at each step.': '前缀 + length 个字符；温度为 0 时每一步取最可能的字符。',
    '# read the prompt (warm-up)': '# 读入前缀（预热）',
    '# one step, state carried': '# 走一步，状态带下去',
    'The longest stretch of sample that appears word for word in source.': 'sample 中逐字出现在 source 里的最长片段。',
}

CELLS = [
    md(
        """
        # 2. Train a character-level LSTM on The Time Machine

        Dive into Deep Learning trains its LSTM on H. G. Wells' *The Time Machine*, one character at a time:
        the first 10,000 characters of the cleaned book, one-hot input, one layer of 256 hidden units, 35 steps
        per sequence, batches of 32, SGD at learning rate 1, gradients clipped to norm 1, 500 epochs. The book
        reports a training perplexity of about 1.0 to 1.1 (its published figure).

        We redo that experiment with a short budget, and then ask the question the book leaves open: is a
        training perplexity near 1 a good language model, or a memorised text? The book ships inside `lstmkit`,
        so nothing is downloaded.

        `BUDGET = 1` takes about two minutes on a 2-core CPU; `BUDGET = 8` gets close to the book's 500 epochs.
        """,
        """
        # 2. 在《时间机器》上训练字符级 LSTM

        《动手学深度学习》用 H. G. 威尔斯的小说《时间机器》逐字符地训练 LSTM：取清洗后全书的前 10,000 个字符，
        输入用独热编码，一层 256 个隐藏单元，每个序列 35 步，批量大小 32，SGD 学习率 1，梯度裁剪到范数 1，
        训练 500 个周期。书中给出的训练困惑度约为 1.0 到 1.1（书中公布的结果）。

        我们用较小的计算预算重做这个实验，然后追问一个书里没有展开的问题：训练困惑度接近 1，
        说明模型学会了语言，还是只是把这段文字背了下来？《时间机器》的文本随 `lstmkit` 一起安装，不需要下载。

        `BUDGET = 1` 在 2 核 CPU 上大约两分钟；`BUDGET = 8` 接近书中的 500 个周期。
        """,
    ),
    code(
        """
        BUDGET = 1  # 1: about two minutes on a 2-core CPU; 8: close to the book's 500 epochs
        """
    ),
    code(
        """
        import math
        import re
        import time

        import matplotlib.pyplot as plt
        import torch
        import torch.nn.functional as F
        from torch import nn

        import lstmkit
        from lstmkit.apps.charlm import load_corpus

        torch.manual_seed(0)
        print("torch", torch.__version__, "| lstmkit", lstmkit.__version__)
        """
    ),
    md(
        """
        ## The text

        D2L's cleaning keeps letters only, lower-cased, and turns every run of anything else into one space.
        The vocabulary is then the 26 letters and the space (the book adds an `<unk>` token that never occurs).
        We keep the last 10% of the book apart, never trained on, to see how well a model predicts text it has
        not read.
        """,
        """
        ## 文本

        按照 D2L 的预处理：只保留字母，统一转成小写，其余字符连续出现时一律替换成一个空格。
        这样词表就是 26 个字母加上空格（书中还多一个从不出现的 `<unk>`）。我们把全书最后 10% 留出来，
        从不用于训练，用来看模型对没读过的文字预测得怎么样。
        """,
    ),
    code(
        """
        book = load_corpus("timemachine")                        # shipped with lstmkit
        text = re.sub("[^A-Za-z]+", " ", book).lower().strip()   # D2L's cleaning
        chars = sorted(set(text))
        index = {ch: i for i, ch in enumerate(chars)}
        V = len(chars)

        def encode(s):
            return torch.tensor([index[ch] for ch in s])

        def decode(ids):
            return "".join(chars[int(i)] for i in ids)

        split = int(0.9 * len(text))
        train_text, held_out_text = text[:split], text[split:]
        d2l_ids = encode(train_text[:10_000])                    # D2L: the first 10,000 characters
        book_ids = encode(train_text)                            # the whole training part
        held_out_ids = encode(held_out_text)
        print(f"{len(book):,} characters in the book, {len(text):,} after cleaning; vocabulary of {V}: {''.join(chars)!r}")
        print(f"training part {len(train_text):,}, held out {len(held_out_text):,}")
        print(repr(text[:160]))
        """
    ),
    md(
        """
        ## The model: one-hot in, `lstmkit.LSTM`, a linear layer out

        At each step the LSTM's $h_t$ goes through a linear layer that scores every character as the next one.
        The loss is the cross-entropy of the true next character; its exponential is the **perplexity**: 27 for
        a model that guesses uniformly among the 27 symbols, 1 for one that is always certain and always right.
        """,
        """
        ## 模型：独热输入，`lstmkit.LSTM`，线性输出层

        每个时间步的 $h_t$ 经过一个线性层，为词表里的每个字符打分，预测下一个字符。损失是真实下一个字符的交叉熵，
        它的指数就是**困惑度**：在 27 个符号里均匀瞎猜的模型困惑度是 27，每次都有十足把握且都猜对的模型是 1。
        """,
    ),
    code(
        """
        class CharLSTM(nn.Module):
            def __init__(self, vocab_size, hidden_size=256):
                super().__init__()
                self.vocab_size = vocab_size
                self.lstm = lstmkit.LSTM(vocab_size, hidden_size)    # a drop-in for torch.nn.LSTM
                self.decoder = nn.Linear(hidden_size, vocab_size)    # h_t -> scores of the next character

            def forward(self, ids, state=None):                      # ids (T, B)
                x = F.one_hot(ids, self.vocab_size).float()           # (T, B, V)
                y, state = self.lstm(x, state)                        # (T, B, H): h_t at every step
                return self.decoder(y), state                         # (T, B, V)


        @torch.no_grad()
        def perplexity(model, ids, rows=32):
            \"\"\"exp(mean cross-entropy) of each character given the ones before it; rows read side by side.\"\"\"
            n = (len(ids) - 1) // rows * rows
            X, Y = ids[:n].view(rows, -1).T, ids[1:n + 1].view(rows, -1).T   # (T, rows)
            logits, _ = model(X)
            return math.exp(F.cross_entropy(logits.reshape(-1, model.vocab_size), Y.reshape(-1)).item())


        print(CharLSTM(V).lstm)
        print(f"perplexity of the untrained model on the held-out text: {perplexity(CharLSTM(V), held_out_ids):.1f}")
        """
    ),
    md(
        """
        ## Training as the book does

        D2L's *sequential* batches: the text is cut into 32 parallel streams, read 35 characters at a time, and
        the state $(h, c)$ is carried from one batch to the next, so the LSTM sees each stream as one long text.
        The state is `detach`ed between batches: the gradient flows back through 35 steps only (truncated
        backpropagation through time). Each epoch starts at a random offset.
        """,
        """
        ## 按书中的方法训练

        D2L 使用**顺序分区**：把文本切成 32 条并行的“流”，每次读 35 个字符，并把状态 $(h, c)$ 从上一批带到下一批，
        这样 LSTM 把每条流都当成一段连续的长文本。批与批之间对状态做 `detach`：梯度只回传 35 步
        （截断的时间反向传播）。每个周期从一个随机偏移开始。
        """,
    ),
    code(
        """
        def sequential_batches(ids, batch_size, num_steps, generator):
            \"\"\"D2L's sequential partitioning: (X, Y) pairs of shape (num_steps, batch_size), Y one step ahead.\"\"\"
            offset = int(torch.randint(num_steps, (1,), generator=generator))
            n = (len(ids) - offset - 1) // batch_size * batch_size
            X = ids[offset:offset + n].view(batch_size, -1)
            Y = ids[offset + 1:offset + 1 + n].view(batch_size, -1)
            for start in range(0, X.shape[1] - num_steps + 1, num_steps):
                yield X[:, start:start + num_steps].T, Y[:, start:start + num_steps].T


        def train_epochs(model, optimizer, ids, epochs, batch_size=32, num_steps=35, every=5, seed=0):
            \"\"\"Returns the history: (epoch, training perplexity of that epoch, held-out perplexity).\"\"\"
            generator = torch.Generator().manual_seed(seed)
            history = []
            for epoch in range(1, epochs + 1):
                state, total, count = None, 0.0, 0
                for X, Y in sequential_batches(ids, batch_size, num_steps, generator):
                    if state is not None:
                        state = tuple(s.detach() for s in state)       # keep the state, cut the gradient
                    logits, state = model(X, state)
                    loss = F.cross_entropy(logits.reshape(-1, model.vocab_size), Y.reshape(-1))
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # D2L clips to norm 1
                    optimizer.step()
                    total, count = total + loss.item() * Y.numel(), count + Y.numel()
                if epoch % every == 0 or epoch == epochs:
                    history.append((epoch, math.exp(total / count), perplexity(model, held_out_ids)))
            return history
        """
    ),
    md(
        """
        Five hundred epochs of SGD are more than our budget, so we train two models for the same short run:
        one exactly as the book (SGD, learning rate 1), and one with Adam (learning rate 0.01), which gets much
        further in the same number of steps.
        """,
        """
        500 个周期的 SGD 超出了我们的预算，所以我们在同样短的训练量下训练两个模型：一个完全照书中的设置
        （SGD，学习率 1），另一个改用 Adam（学习率 0.01），它在同样的步数里能走得远得多。
        """,
    ),
    code(
        """
        EPOCHS = max(1, round(60 * BUDGET))
        runs = {}
        for name, make_optimizer in [("SGD, lr 1 (the book)", lambda p: torch.optim.SGD(p, lr=1.0)),
                                     ("Adam, lr 0.01", lambda p: torch.optim.Adam(p, lr=0.01))]:
            torch.manual_seed(0)
            model = CharLSTM(V)
            start = time.process_time()
            history = train_epochs(model, make_optimizer(model.parameters()), d2l_ids, EPOCHS)
            runs[name] = (model, history)
            epoch, train_ppl, held_ppl = history[-1]
            print(f"{name:22s} {EPOCHS} epochs in {time.process_time() - start:5.1f} CPU s: "
                  f"training perplexity {train_ppl:6.2f}, held-out {held_ppl:6.2f}")

        figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
        for name, (_, history) in runs.items():
            epochs = [e for e, _, _ in history]
            axes[0].plot(epochs, [p for _, p, _ in history], label=name)
            axes[1].plot(epochs, [q for _, _, q in history], label=name)
        titles = ["training perplexity (first 10,000 characters)", "held-out perplexity (last 10%)"]
        for ax, what in zip(axes, titles, strict=True):
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_title(what)
            ax.legend()
        plt.show()
        """
    ),
    code(
        en="""
        from IPython.display import Markdown

        (_, sgd), (_, adam) = runs.values()
        best = min(adam, key=lambda row: row[2])
        Markdown(f\"\"\"
        After {EPOCHS} epochs, the book's SGD is at training perplexity **{sgd[-1][1]:.2f}** and Adam at
        **{adam[-1][1]:.2f}** (the book reaches 1.0-1.1 after 500 epochs). On the held-out end of the book,
        Adam's model was best at epoch {best[0]} (perplexity {best[2]:.2f}) and is at **{adam[-1][2]:.2f}** now:
        {"it got worse while the training perplexity kept falling: the model is learning these 10,000 "
         "characters by heart, not English." if adam[-1][2] > best[2] else
         "it has not started to get worse yet; a longer run (raise BUDGET) shows the held-out perplexity "
         "turning up while the training perplexity keeps falling."}
        \"\"\")
        """,
        zh="""
        from IPython.display import Markdown

        (_, sgd), (_, adam) = runs.values()
        best = min(adam, key=lambda row: row[2])
        Markdown(f\"\"\"
        训练 {EPOCHS} 个周期后，书中的 SGD 训练困惑度为 **{sgd[-1][1]:.2f}**，Adam 为 **{adam[-1][1]:.2f}**
        （书中训练 500 个周期后是 1.0～1.1）。在留出的全书末尾部分上，Adam 模型在第 {best[0]} 个周期最好
        （困惑度 {best[2]:.2f}），现在是 **{adam[-1][2]:.2f}**：
        {"训练困惑度一路下降的同时，它反而变差了——模型是在背这 10,000 个字符，而不是在学英语。"
         if adam[-1][2] > best[2] else
         "还没有开始变差；训练更久一些（调大 BUDGET）就能看到训练困惑度继续下降、留出困惑度却掉头上升。"}
        \"\"\".replace("\\n", ""))  # Chinese runs on without line breaks
        """,
    ),
    md(
        """
        ## Generating text

        To generate, the model reads a prompt, then repeatedly takes its most likely next character (or samples
        one), feeds it back in and carries the state: exactly D2L's `predict_ch8`. The book prompts with
        "time traveller".
        """,
        """
        ## 生成文本

        生成时，模型先读入一段前缀，然后反复取最可能的下一个字符（或按概率抽样），把它当作下一步的输入，
        同时把状态带下去——这正是 D2L 的 `predict_ch8`。书中用的前缀是 “time traveller”。
        """,
    ),
    code(
        """
        @torch.no_grad()
        def generate(model, prompt, length, temperature=0.0, seed=0):
            \"\"\"prompt + length characters; temperature 0 takes the most likely character at each step.\"\"\"
            generator = torch.Generator().manual_seed(seed)
            logits, state = model(encode(prompt).view(-1, 1))      # read the prompt (warm-up)
            out = []
            for _ in range(length):
                scores = logits[-1, 0]
                if temperature == 0:
                    next_id = int(scores.argmax())
                else:
                    next_id = int(torch.multinomial(torch.softmax(scores / temperature, -1), 1, generator=generator))
                out.append(next_id)
                logits, state = model(torch.tensor([[next_id]]), state)   # one step, state carried
            return prompt + decode(out)


        def longest_copy(sample, source):
            \"\"\"The longest stretch of sample that appears word for word in source.\"\"\"
            best = ""
            for start in range(len(sample)):
                end = start + len(best) + 1
                while end <= len(sample) and sample[start:end] in source:
                    best, end = sample[start:end], end + 1
            return best


        adam_model = runs["Adam, lr 0.01"][0]
        sample = generate(adam_model, "time traveller ", 80)
        copied = longest_copy(sample, train_text[:10_000])
        print(sample)
        print(f"longest stretch found word for word in the 10,000 training characters: {len(copied)} characters")
        print(repr(copied))
        """
    ),
    md(
        """
        ## The whole book, read for the same short time

        A model that is to predict text it has not seen needs more text than it can memorise. The same model
        now trains on the whole training part (about 15 times as much), on random 35-character windows with
        Adam, and we follow the held-out perplexity.
        """,
        """
        ## 换成整本书，同样只训练一小会儿

        要预测没见过的文字，训练数据就得多到模型背不下来。同一个模型现在在整个训练部分上训练（大约是前者的
        15 倍），每批取随机位置的 35 个字符的窗口，用 Adam，并跟踪留出文本上的困惑度。
        """,
    ),
    code(
        """
        STEPS = max(10, round(1500 * BUDGET))
        torch.manual_seed(0)
        book_model = CharLSTM(V)
        optimizer = torch.optim.Adam(book_model.parameters(), lr=0.005)
        generator = torch.Generator().manual_seed(1)
        curve, losses, start = [], [], time.process_time()
        for step in range(1, STEPS + 1):
            starts = torch.randint(len(book_ids) - 36, (32,), generator=generator)
            window = torch.stack([book_ids[s:s + 36] for s in starts.tolist()]).T   # (36, 32)
            logits, _ = book_model(window[:-1])
            loss = F.cross_entropy(logits.reshape(-1, V), window[1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(book_model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            if step % 100 == 0 or step == STEPS:
                curve.append((step, math.exp(sum(losses[-100:]) / len(losses[-100:])), perplexity(book_model, held_out_ids)))
        print(f"{STEPS} steps in {time.process_time() - start:.1f} CPU s: training perplexity {curve[-1][1]:.2f}, "
              f"held-out {curve[-1][2]:.2f}")

        plt.figure(figsize=(6, 3.6))
        plt.plot([s for s, _, _ in curve], [p for _, p, _ in curve], label="training (last 100 steps)")
        plt.plot([s for s, _, _ in curve], [q for _, _, q in curve], label="held out")
        plt.xlabel("step")
        plt.ylabel("perplexity")
        plt.yscale("log")
        plt.title("the whole book, random windows, Adam")
        plt.legend()
        plt.show()
        """
    ),
    code(
        """
        for temperature in (0.0, 0.6):
            sample = generate(book_model, "time traveller ", 160, temperature=temperature, seed=1)
            copied = longest_copy(sample[len("time traveller "):], train_text)
            print(f"temperature {temperature}: {sample}")
            print(f"    longest stretch found word for word in the training part: {len(copied)} characters {copied!r}\\n")
        """
    ),
    code(
        en="""
        Markdown(f\"\"\"
        On the held-out text this model reaches perplexity **{curve[-1][2]:.2f}** after {STEPS} steps, against
        **{best[2]:.2f}** at best for the model trained on the first 10,000 characters, whose training perplexity
        was {adam[-1][1]:.2f}. A low *training* perplexity on a small text says how well the model has memorised
        it; the held-out perplexity is the one that says how well it predicts English.
        \"\"\")
        """,
        zh="""
        Markdown(f\"\"\"
        训练 {STEPS} 步后，这个模型在留出文本上的困惑度为 **{curve[-1][2]:.2f}**；而只在前 10,000 个字符上训练的模型，
        训练困惑度虽然低到 {adam[-1][1]:.2f}，留出困惑度最好也只有 **{best[2]:.2f}**。
        在一小段文本上的*训练*困惑度低，说明的是模型背得有多熟；能说明它对英语预测得好不好的，是留出文本上的困惑度。
        \"\"\".replace("\\n", ""))  # Chinese runs on without line breaks
        """,
    ),
    md(
        """
        ## What to take away

        - D2L's experiment fits in a notebook cell; with Adam a short run gets most of the way to the book's
          training perplexity.
        - That training perplexity is measured on the 10,000 characters the model trains on. Measure on text
          the model has not read, and keep the model from the epoch where that was best.
        - The command line does all of this with checkpoints, early stopping and resuming:
          `lstmkit train --recipe d2l --out runs/d2l` (the book's recipe), `lstmkit train --out runs/tm` (the
          whole book), `lstmkit generate --checkpoint runs/tm --prompt "time traveller"`.

        Next: [3. Look inside](03-look-inside.ipynb).
        """,
        """
        ## 小结

        - D2L 的实验一个单元格就能装下；换成 Adam 后，短短一次训练就能接近书中的训练困惑度。
        - 但这个训练困惑度是在模型训练用的那 10,000 个字符上量出来的。应当在模型没读过的文本上衡量，
          并保留在那里表现最好的那个周期的模型。
        - 命令行把这些都做好了，还带检查点、提前停止和断点续训：`lstmkit train --recipe d2l --out runs/d2l`
          （书中的配方），`lstmkit train --out runs/tm`（整本书），
          `lstmkit generate --checkpoint runs/tm --prompt "time traveller"`。

        下一节：[3. 看看 LSTM 内部](03-look-inside.ipynb)。
        """,
    ),
]
