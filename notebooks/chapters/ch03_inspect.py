"""Chapter 3: look inside a trained character LSTM: recorded gates, heatmaps, the gate viewer, a long memory."""
# ruff: noqa: E501  (prose; the cells' code is checked in the built notebooks: ruff check notebooks/en)

from . import code, md

SLUG = "03-look-inside"
TITLE = {"en": "Look inside", "zh-CN": "看看 LSTM 内部"}

# Chinese for the comments and docstrings of the shared code cells, applied to the zh-CN notebook only.
ZH_COMMENTS = {
    '# 1: under a minute on a 2-core CPU; raise it to train longer': '# 1：2 核 CPU 上不到一分钟；调大它就训练得更久',
    '# heatmaps (PNG) and the gate viewer (one self-contained HTML page)': '# 热力图（PNG）和门查看器（一个自包含的 HTML 页面）',
    '# layer 0, forward, sequence 0: {name: (T, cells)}': '# 第 0 层、前向、第 0 条序列：{名称: (T, 单元)}',
    '# one score per cell, in [0, 1]': '# 每个单元一个得分，在 [0, 1] 之间',
    '# IPython suggests IFrame, which takes no srcdoc': '# IPython 建议用 IFrame，但它不支持 srcdoc',
    '(start, length) of the longest run of True in a 1-D boolean tensor.': '一维布尔张量中最长的一段连续 True 的 (起点, 长度)。',
    '# one step at least: the statistics need one': '# 至少一步：下面的统计量需要',
}

CELLS = [
    md(
        """
        # 3. Look inside

        The equations say what each gate *can* do. Here we watch what they *do*: we train a small character
        LSTM on The Time Machine (this time the raw text, with capitals, punctuation, quotation marks and line
        breaks), record every gate at every character with `lstmkit.inspect`, draw them, open the interactive
        gate viewer, and look in the recording for a cell whose forget gate stays open across a long stretch of
        text: a memory being kept.

        `BUDGET = 1` takes under a minute on a 2-core CPU; a larger budget trains longer and gives cleaner cells.
        """,
        """
        # 3. 看看 LSTM 内部

        公式告诉我们每个门**能**做什么，这一节我们来看它们实际**在**做什么：先在《时间机器》上训练一个小的字符级 LSTM
        （这次用原始文本，保留大小写、标点、引号和换行），再用 `lstmkit.inspect` 记录它读每个字符时每个门的取值，
        画成热力图，打开交互式的门查看器，最后在记录里找一个遗忘门在很长一段文字上一直敞开的单元——
        也就是一段被保存下来的记忆。

        `BUDGET = 1` 在 2 核 CPU 上不到一分钟；预算越大训练越久，单元的行为也越清晰。
        """,
    ),
    code(
        """
        BUDGET = 1  # 1: under a minute on a 2-core CPU; raise it to train longer
        """
    ),
    code(
        """
        import html
        import math
        import tempfile
        import time
        import warnings
        from pathlib import Path

        import torch
        import torch.nn.functional as F
        from torch import nn

        import lstmkit
        import lstmkit.viz  # heatmaps (PNG) and the gate viewer (one self-contained HTML page)
        from lstmkit.apps.charlm import load_corpus

        %matplotlib inline
        import matplotlib.pyplot as plt
        from IPython.display import HTML, Image, Markdown, display

        torch.manual_seed(0)
        book = load_corpus("timemachine")
        chars = sorted(set(book))
        index = {ch: i for i, ch in enumerate(chars)}
        V = len(chars)
        book_ids = torch.tensor([index[ch] for ch in book])
        print(f"{len(book):,} characters, {V} different ones")
        """
    ),
    md(
        """
        ## A small model, trained briefly

        One layer of 128 cells reading one-hot characters, trained with Adam on random 64-character windows.
        """,
        """
        ## 一个小模型，简单训练一下

        一层 128 个单元，输入是独热编码的字符，用 Adam 在随机截取的 64 字符窗口上训练。
        """,
    ),
    code(
        """
        class CharLSTM(nn.Module):
            def __init__(self, vocab_size, hidden_size=128):
                super().__init__()
                self.vocab_size = vocab_size
                self.lstm = lstmkit.LSTM(vocab_size, hidden_size)
                self.decoder = nn.Linear(hidden_size, vocab_size)

            def forward(self, ids, state=None):                      # ids (T, B)
                y, state = self.lstm(F.one_hot(ids, self.vocab_size).float(), state)
                return self.decoder(y), state                         # (T, B, V)


        STEPS = max(10, round(1200 * BUDGET))
        model = CharLSTM(V)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
        generator = torch.Generator().manual_seed(1)
        start, losses = time.process_time(), []
        for _ in range(STEPS):
            starts = torch.randint(len(book_ids) - 65, (32,), generator=generator).tolist()
            window = torch.stack([book_ids[s:s + 65] for s in starts]).T    # (65, 32)
            logits, _ = model(window[:-1])
            loss = F.cross_entropy(logits.reshape(-1, V), window[1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
        recent = sum(losses[-100:]) / len(losses[-100:])
        print(f"{STEPS} steps in {time.process_time() - start:.1f} CPU s; training loss over the last 100 steps "
              f"{recent:.2f} nats, {recent / math.log(2):.2f} bits per character")
        """
    ),
    md(
        """
        ## Recording the gates

        `lstmkit.inspect.record(module, input)` runs the LSTM once, without gradients, and returns a `GateRecord`:
        `i, f, g, o, c, h` of every layer, direction, step and cell. We let the model read the opening of the
        Time Traveller's lecture in chapter 1.
        """,
        """
        ## 记录每个门

        `lstmkit.inspect.record(module, input)` 让 LSTM 前向运行一遍（不计算梯度），返回一个 `GateRecord`：
        每一层、每个方向、每个时间步、每个单元的 `i, f, g, o, c, h`。我们让模型读第一章里时间旅行者讲课的开头。
        """,
    ),
    code(
        """
        start = book.index("'You must follow me carefully")
        passage = book[start:start + 480]
        x = F.one_hot(torch.tensor([index[ch] for ch in passage]), V).float().unsqueeze(1)   # (T, 1, V)
        gates = lstmkit.inspect.record(model.lstm, x)
        print("f:", tuple(gates.f.shape), "= (layers, directions, steps, batch, cells)")
        seq = gates.sequence(0, 0, 0)              # layer 0, forward, sequence 0: {name: (T, cells)}
        print({name: tuple(value.shape) for name, value in seq.items()})

        stats = lstmkit.inspect.saturation(gates)["layers"][0]
        for name in "ifo":
            print(f"gate {name}: below 0.1 for {stats[name]['below']:.0%} of the steps, "
                  f"above 0.9 for {stats[name]['above']:.0%}, mean {stats[name]['mean']:.2f}")
        """
    ),
    md(
        """
        ## Heatmaps

        `lstmkit.viz.inspect_sequence` writes what `lstmkit inspect` writes: the gates of the most
        interpretable cells as heatmaps (rows are cells, columns are characters), the text coloured by each of
        the best cells' $\\tanh(c)$ (blue −1, red +1), and the gates' saturation, Karpathy et al.'s figure
        (each dot a cell: how often the gate is nearly shut, below 0.1, against how often it is wide open,
        above 0.9). Cells are ranked by $\\mathrm{std}(\\tanh c)$ times the lag-1 autocorrelation of
        $\\tanh c$: a cell that varies, but slowly, holds something from one character to the next.
        """,
        """
        ## 热力图

        `lstmkit.viz.inspect_sequence` 写出的内容和命令行 `lstmkit inspect` 一样：最“可解释”的几个单元的各个门的热力图
        （行是单元，列是字符）；用最好的几个单元的 $\\tanh(c)$ 给文本着色（蓝色为 −1，红色为 +1）；
        以及各门的饱和程度，即 Karpathy 等人论文中的那张图（每个点是一个单元：横轴是门几乎关闭、低于 0.1 的比例，
        纵轴是门几乎全开、高于 0.9 的比例）。单元按 $\\tanh c$ 的标准差乘以它的一阶自相关系数排序：
        一个单元的值既有变化、又变得慢，说明它把某些东西从一个字符保留到了下一个字符。
        """,
    ),
    code(
        """
        out = Path(tempfile.mkdtemp(prefix="lstmkit-inspect-"))
        inspection = lstmkit.viz.inspect_sequence(gates, list(passage), out, top_cells=8, text_cells=2,
                                                  heatmap_chars=120, text_chars=320)
        print([path.name for path in inspection.files])
        display(Image(filename=out / "gates_l0.png"))
        """
    ),
    code(
        """
        display(Image(filename=out / "cells_l0.png"))
        display(Image(filename=out / "saturation.png"))
        """
    ),
    md(
        """
        ## The gate viewer, inline

        The same page that `lstmkit inspect` writes as `index.html`: one self-contained file (its data, script and
        style inline; it loads nothing). Move over a character to see every gate and state of the chosen cell at
        that step; click a column of the strip to pick another cell. To keep this notebook small it holds the 16
        best-ranked cells (the viewer numbers them 0 to 15; the list printed below maps them back).

        Jupyter and code-hosting sites do not run scripts in a notebook's *stored* outputs: run the cell to see
        the viewer. The heatmaps above are plain pictures and show everywhere.
        """,
        """
        ## 内嵌的门查看器

        这就是 `lstmkit inspect` 写出的 `index.html`：一个自包含的网页（数据、脚本和样式都在文件里，不加载任何外部资源）。
        把鼠标移到某个字符上，就能看到所选单元在这一步的全部门和状态；点击下方色带中的一列可以换一个单元。
        为了让 notebook 保持小巧，这里只放了排名最靠前的 16 个单元（查看器里编号为 0 到 15，下面打印的列表
        给出它们在模型中的原编号）。

        Jupyter 和代码托管网站不会执行 notebook 中**已保存**输出里的脚本：请运行这个单元来查看。
        上面的热力图是普通图片，在哪里都能显示。
        """,
    ),
    code(
        """
        scores = lstmkit.inspect.cell_scores(seq["c"])             # one score per cell, in [0, 1]
        shown = torch.argsort(scores, descending=True)[:16].tolist()
        print("viewer cell k is model cell", dict(enumerate(shown)))
        layer = {"layer": 0, "direction": 0, "ranking": list(range(len(shown))), "scores": scores[shown].tolist(),
                 **{name: seq[name][:, shown].numpy() for name in "ifgoch"}}
        page = lstmkit.viz.render_page(lstmkit.viz.page_data([layer], list(passage), title="gate viewer", decimals=2))
        print(f"the page: {len(page):,} characters, self-contained")
        with warnings.catch_warnings():                            # IPython suggests IFrame, which takes no srcdoc
            warnings.simplefilter("ignore")
            viewer = HTML(f'<iframe srcdoc="{html.escape(page)}" style="width: 100%; height: 640px; '
                          'border: 1px solid #ccc"></iframe>')
        viewer
        """
    ),
    md(
        """
        ## A memory kept: a forget gate that stays open

        The cell keeps its content where $f_t$ is close to 1: $c_t = f_t c_{t-1} + i_t g_t$. Over a stretch of
        steps, the part of $c$ that survives from the start is the product of the $f_t$ along it. We look in the
        recording for the longest run of consecutive characters over which one cell's forget gate stays above
        0.9.
        """,
        """
        ## 被保存的记忆：一直敞开的遗忘门

        由 $c_t = f_t c_{t-1} + i_t g_t$ 可知，$f_t$ 接近 1 的地方，记忆元就保住了原有的内容。在一段连续的时间步上，
        起点时的 $c$ 能留到终点的那一部分，等于这一段上所有 $f_t$ 的乘积。我们在记录中寻找：哪个单元的遗忘门
        连续高于 0.9 的那段字符最长。
        """,
    ),
    code(
        """
        OPEN = 0.9
        f = seq["f"]                                               # (T, cells)


        def longest_run(mask):
            \"\"\"(start, length) of the longest run of True in a 1-D boolean tensor.\"\"\"
            best, run_start, best_start = 0, 0, 0
            for t, value in enumerate(mask.tolist() + [False]):
                if not value:
                    if t - run_start > best:
                        best, best_start = t - run_start, run_start
                    run_start = t + 1
            return best_start, best


        runs = [longest_run(f[:, j] > OPEN) for j in range(f.shape[1])]
        cell = max(range(len(runs)), key=lambda j: runs[j][1])
        span_start, span = runs[cell]
        span_end = span_start + max(span, 1)                       # one step at least: the statistics need one
        kept = float(f[span_start:span_end, cell].prod())
        written = float(seq["i"][span_start:span_end, cell].mean())
        c = seq["c"][:, cell]
        c_start, c_end = float(c[span_start]), float(c[span_end - 1])
        shown_c = torch.tanh(c[span_start:span_end])
        low, high = float(shown_c.min()), float(shown_c.max())
        print(f"cell {cell}: forget gate above {OPEN} for {span} characters in a row (steps {span_start}-{span_end - 1})")
        print(f"  product of f over the run: {kept:.3f}; mean input gate there: {written:.2f}")
        print(f"  c at the run's start {c_start:+.2f}, at its end {c_end:+.2f}; tanh(c) between {low:+.2f} and {high:+.2f}")
        print(f"  the text it spans: {passage[span_start:span_end]!r}")
        print(f"cells with such a run of 40 characters or more: {sum(length >= 40 for _, length in runs)} of {len(runs)}")

        figure, ax = plt.subplots(figsize=(11, 3.2))
        ax.plot(f[:, cell].numpy(), label=f"forget gate f, cell {cell}")
        ax.plot(seq["i"][:, cell].numpy(), label="input gate i", alpha=0.6)
        ax.plot(torch.tanh(c).numpy(), label="tanh(c)")
        ax.axvspan(span_start, span_end - 1, color="gold", alpha=0.25, label=f"f > {OPEN}")
        ax.set_xlabel("character of the passage")
        ax.set_ylim(-1.05, 1.05)
        ax.legend(loc="lower right", fontsize=8)
        plt.show()
        """
    ),
    code(
        en="""
        steady = high - low < 0.05
        saturated = c_start * c_end > 0 and abs(c_end) > abs(c_start) > 3   # c grows away from 0 on one side
        if span == 0:
            display(Markdown(f"No forget gate rose above {OPEN} in this passage: the model is barely trained "
                             "(an untrained LSTM's forget gates sit near 1/2). Raise `BUDGET` and run again."))
        Markdown(f\"\"\"
        Across these {span} characters the forget gate of cell {cell} stays above {OPEN}. Left alone (input gate
        shut), the cell would keep {kept:.1%} of what it held at the start: the product of the $f_t$ over the run.
        {f"Its tanh(c) hardly moves ({low:+.2f} to {high:+.2f}): the cell holds one value across the whole span"
         if steady else f"Its tanh(c) moves between {low:+.2f} and {high:+.2f}"}, while the input gate writes at a
        mean of {written:.2f}{f" in the same direction (c goes from {c_start:+.1f} to {c_end:+.1f}, far enough from 0 "
                              "that tanh(c) is saturated)" if saturated else ""}.
        This is the conveyor belt of the texts at work: a value carried along many steps, and with it (chapter 4)
        the gradient. Whether this cell tracks something a reader would name (a quotation, a clause, the place in
        a line) is what the heatmaps and the viewer above let you judge; a longer run (larger `BUDGET`) gives
        cleaner cells.
        \"\"\")
        """,
        zh="""
        steady = high - low < 0.05
        saturated = c_start * c_end > 0 and abs(c_end) > abs(c_start) > 3   # c grows away from 0 on one side
        if span == 0:
            display(Markdown(f"这段文字里没有哪个遗忘门超过 {OPEN}：模型几乎还没训练（未训练的 LSTM 遗忘门都在 1/2 附近）。"
                             "请调大 `BUDGET` 再运行一次。"))
        Markdown(f\"\"\"
        在这 {span} 个字符上，单元 {cell} 的遗忘门始终高于 {OPEN}。如果输入门关闭、不再写入，记忆元到这段的终点还能保留
        起点内容的 {kept:.1%}，也就是这一段上所有 $f_t$ 的乘积。
        {f"它的 tanh(c) 几乎不变（{low:+.2f} 到 {high:+.2f}）：整段文字里这个单元一直保持着同一个值"
         if steady else f"它的 tanh(c) 在 {low:+.2f} 和 {high:+.2f} 之间变化"}；与此同时，输入门的平均值为 {written:.2f}
        {f"，而且一直朝同一个方向写入（c 从 {c_start:+.1f} 变到 {c_end:+.1f}，离 0 足够远，tanh(c) 已经饱和）"
         if saturated else ""}。
        这正是教材里说的“传送带”：一个值被带着走过很多步，梯度也随之传回去（见第 4 节）。
        至于这个单元是否在跟踪某种读者叫得出名字的东西（引号、从句、行内的位置），可以借助上面的热力图和查看器自己判断；
        训练得更久（调大 `BUDGET`），单元的行为会更清晰。
        \"\"\".replace("\\n", ""))  # Chinese runs on without line breaks
        """,
    ),
    md(
        """
        ## What to take away

        - `lstmkit.inspect.record` returns every gate of every step; `lstmkit.viz` draws them and builds the
          viewer. From the command line: `lstmkit inspect --checkpoint runs/tm --text "..." --out runs/tm/inspect`.
        - A forget gate near 1 over many steps is how the LSTM keeps a memory; the product of the $f_t$ says how
          much of it survives.

        Next: [4. What an LSTM remembers and a simple RNN forgets](04-remember-and-forget.ipynb).
        """,
        """
        ## 小结

        - `lstmkit.inspect.record` 返回每一步的每个门；`lstmkit.viz` 负责画图和生成查看器。
          命令行的对应做法：`lstmkit inspect --checkpoint runs/tm --text "..." --out runs/tm/inspect`。
        - 遗忘门在许多步上都接近 1，LSTM 就是这样保存记忆的；这些 $f_t$ 的乘积告诉我们记忆还剩多少。

        下一节：[4. LSTM 记得住、简单 RNN 记不住的东西](04-remember-and-forget.ipynb)。
        """,
    ),
]
