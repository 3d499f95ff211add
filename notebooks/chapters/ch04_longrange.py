"""Chapter 4: the adding problem, LSTM against tanh RNN against GRU; the gradient that reaches each step."""
# ruff: noqa: E501  (prose; the cells' code is checked in the built notebooks: ruff check notebooks/en)

from . import code, md

SLUG = "04-remember-and-forget"
TITLE = {"en": "What an LSTM remembers and a simple RNN forgets", "zh-CN": "LSTM 记得住、简单 RNN 记不住的东西"}

# Chinese for the comments and docstrings of the shared code cells, applied to the zh-CN notebook only.
ZH_COMMENTS = {
    '# training steps in units of 1,500; raise it for a longer run': '# 训练步数，以 1,500 步为单位；调大它就训练得更久',
    '# the sequence length T; try 100 or 200 with a larger BUDGET': '# 序列长度 T；配合更大的 BUDGET 试试 100 或 200',
    '# (B, 1, 1): the answer, read after the last step': '# (B, 1, 1)：读完最后一步后给出答案',
    'Returns [(step, held-out MSE)], step 0 included.': '返回 [(步数, 留出数据上的均方误差)]，包括第 0 步。',
    '# the LSTM: chrono init': '# LSTM 使用 chrono 初始化',
}

CELLS = [
    md(
        """
        # 4. What an LSTM remembers and a simple RNN forgets

        "I grew up in France ... I speak fluent *French*": the word that decides the answer lies far back. A
        simple RNN can in principle carry it there; in practice (Hochreiter 1991; Bengio, Simard & Frasconi
        1994) the gradient that should teach it to do so shrinks at every step it travels back, and the RNN does
        not learn the link. The LSTM was built to fix exactly that (Hochreiter & Schmidhuber 1997).

        We test the claim on the **adding problem** (their experiment 4, in the form of Le, Jaitly & Hinton
        2015). Each step carries a number in [0, 1] and a marker; two steps are marked, one in each half of the
        sequence, and the answer is the sum of the two marked numbers. A model that remembers nothing can only
        guess the average sum, 1, and its mean squared error is then the variance of the sum, 1/6: the
        **chance level**. The task counts as solved at 1% of it.

        `LENGTH` is the sequence length and `BUDGET` the number of training steps (in units of 1,500); with both
        as they are, the chapter runs in about a minute on a 2-core CPU.
        """,
        """
        # 4. LSTM 记得住、简单 RNN 记不住的东西

        “我在法国长大……我能说一口流利的**法语**”：决定答案的那个词在很远的前面。简单 RNN 理论上能把它一路带到这里；
        但实际上（Hochreiter 1991；Bengio、Simard 和 Frasconi 1994），本该教会它这样做的梯度每往回传一步就缩小一些，
        RNN 学不到这种远距离的联系。LSTM 正是为了解决这个问题而设计的（Hochreiter 和 Schmidhuber 1997）。

        我们用**加法问题**来检验这个说法（他们的实验 4，采用 Le、Jaitly 和 Hinton 2015 的形式）。
        每个时间步输入一个 [0, 1] 之间的数和一个标记；序列前半段和后半段各有一步被标记，答案是这两个被标记的数之和。
        什么都不记的模型只能猜和的平均值 1，这时它的均方误差等于和的方差 1/6，这就是**随机水平**。
        误差降到随机水平的 1% 即算解决。

        `LENGTH` 是序列长度，`BUDGET` 是训练步数（以 1,500 步为单位）；保持默认值时，这一节在 2 核 CPU 上大约一分钟。
        """,
    ),
    code(
        """
        BUDGET = 1   # training steps in units of 1,500; raise it for a longer run
        LENGTH = 50  # the sequence length T; try 100 or 200 with a larger BUDGET
        """
    ),
    code(
        """
        import time

        import matplotlib.pyplot as plt
        import torch
        from torch import nn

        import lstmkit
        from lstmkit.apps.longrange import LongRangeConfig, gradient_flow
        from lstmkit.synthetic import AddingProblem

        torch.manual_seed(0)
        task = AddingProblem(LENGTH)
        x, y = task.sample(2, torch.Generator().manual_seed(0))
        print(f"x: {tuple(x.shape)} = (batch, steps, [number, marker]); y: {tuple(y.shape)}")
        marked = x[0, :, 1].nonzero().flatten().tolist()
        print(f"sequence 0: marked steps {marked}, numbers {x[0, marked, 0].tolist()}, answer {y[0].item():.4f}")
        print(f"chance level (MSE) {task.baseline:.4f}; solved at or below {task.threshold:.5f}")
        """
    ),
    md(
        """
        ## Three models, one training loop

        The same recipe for all three: a recurrent layer of 64 units, a linear layer on its last output, AdamW
        at learning rate 0.003, batches of 64 fresh sequences, gradients clipped to norm 1. The LSTM starts with
        the *chrono* initialisation (Tallec & Ollivier 2018; chapter 5 compares it with the others). Every 100
        steps we measure the error on 512 held-out sequences.
        """,
        """
        ## 三个模型，同一个训练循环

        三个模型用同一套配方：一个 64 单元的循环层，在它最后一步的输出上接一个线性层；AdamW，学习率 0.003；
        每批 64 条新生成的序列；梯度裁剪到范数 1。LSTM 使用 *chrono* 初始化（Tallec 和 Ollivier 2018；
        第 5 节会把它和其他初始化方法比较）。每 100 步在 512 条留出序列上测一次误差。
        """,
    ),
    code(
        """
        class Regressor(nn.Module):
            def __init__(self, rnn, hidden_size):
                super().__init__()
                self.rnn, self.head = rnn, nn.Linear(hidden_size, 1)

            def forward(self, x):                     # x (B, T, 2)
                out, _ = self.rnn(x)                  # (B, T, H)
                return self.head(out[:, -1:])         # (B, 1, 1): the answer, read after the last step


        def make(name, hidden_size=64):
            if name == "LSTM":
                rnn = lstmkit.LSTM(2, hidden_size, batch_first=True, init="chrono", chrono_max=task.seq_len)
            elif name == "GRU":
                rnn = lstmkit.GRU(2, hidden_size, batch_first=True)
            else:
                rnn = lstmkit.RNN(2, hidden_size, batch_first=True, nonlinearity="tanh")
            return Regressor(rnn, hidden_size)


        def train(model, steps, seed=0, every=100):
            \"\"\"Returns [(step, held-out MSE)], step 0 included.\"\"\"
            optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
            data = torch.Generator().manual_seed(seed + 1)
            x_val, y_val = task.sample(512, torch.Generator().manual_seed(seed + 2))
            history = []
            for step in range(steps + 1):
                if step % every == 0:
                    with torch.no_grad():
                        history.append((step, task.metric(model(x_val), y_val)))
                if step == steps:
                    break
                x, y = task.sample(64, data)
                loss = task.loss(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            return history
        """
    ),
    code(
        """
        STEPS = max(100, round(1500 * BUDGET))
        results = {}
        for name in ("LSTM", "GRU", "tanh RNN"):
            torch.manual_seed(0)
            model = make(name)
            start = time.process_time()
            history = train(model, STEPS)
            solved = next((step for step, mse in history if mse <= task.threshold), None)
            results[name] = (history, solved)
            print(f"{name:8s} {time.process_time() - start:5.1f} CPU s; held-out MSE after {STEPS} steps "
                  f"{history[-1][1]:.5f}; " + (f"solved at step {solved}" if solved is not None else "not solved"))

        plt.figure(figsize=(7, 4))
        for name, (history, _) in results.items():
            plt.plot([s for s, _ in history], [m for _, m in history], label=name)
        plt.axhline(task.baseline, color="grey", linestyle="--", label="chance level (1/6)")
        plt.axhline(task.threshold, color="grey", linestyle=":", label="solved (1% of chance)")
        plt.yscale("log")
        plt.xlabel("training step")
        plt.ylabel("held-out mean squared error")
        plt.title(f"the adding problem, T = {LENGTH}")
        plt.legend()
        plt.show()
        """
    ),
    code(
        en="""
        from IPython.display import Markdown


        def verdict(name):
            history, solved = results[name]
            if solved is not None:
                return f"the {name} solved it at step {solved}"
            left = history[-1][1] < 0.5 * task.baseline
            where = "left the chance level but did not reach" if left else "stayed at the chance level, short of"
            return f"the {name} {where} the threshold in {STEPS} steps (final MSE {history[-1][1]:.4f})"


        Markdown(f"At T = {LENGTH}: {verdict('LSTM')}; {verdict('GRU')}; {verdict('tanh RNN')}. "
                 "The GRU is gated too: its update gate can hold $h$ just as the forget gate holds $c$. "
                 "The measured table for longer sequences, several seeds and the other tasks is in "
                 "[docs/longrange.md](../../docs/longrange.md).")
        """,
        zh="""
        from IPython.display import Markdown


        def verdict(name):
            history, solved = results[name]
            if solved is not None:
                return f"{name} 在第 {solved} 步解决了问题"
            left = history[-1][1] < 0.5 * task.baseline
            return f"{name} {'离开了随机水平，但' if left else '一直停在随机水平，'}在 {STEPS} 步内没有达到解决的标准" \\
                   f"（最终均方误差 {history[-1][1]:.4f}）"


        Markdown(f"T = {LENGTH} 时：{verdict('LSTM')}；{verdict('GRU')}；{verdict('tanh RNN')}。"
                 "GRU 也有门：它的更新门可以像遗忘门保存 $c$ 那样把 $h$ 保存下来。"
                 "更长的序列、多个随机种子以及其他任务的实测结果见 [docs/longrange.md](../../docs/longrange.md)。")
        """,
    ),
    md(
        """
        ## Why: the gradient that reaches each step

        The answer depends on the marked numbers, so the loss has to send a signal back to those early steps.
        Here is its size: $\\lVert \\partial L / \\partial h_t \\rVert$ for every step $t$, at initialisation,
        on one batch (the total derivative, through every later step). `lstmkit.apps.longrange.gradient_flow`
        runs the models one step per call so that each $h_t$ is a tensor of the graph whose gradient we can
        read, and it computes in float64, because in float32 the simple RNN's gradient underflows to exactly 0.
        """,
        """
        ## 原因：传回每一步的梯度

        答案取决于被标记的那两个数，所以损失必须把信号传回那些靠前的时间步。下面画的就是这个信号的大小：
        在初始化时、同一批数据上，每一步的 $\\lVert \\partial L / \\partial h_t \\rVert$（全导数，经过之后的每一步）。
        `lstmkit.apps.longrange.gradient_flow` 让模型每次只前进一步，这样每个 $h_t$ 都是计算图里的一个张量，
        可以读出它的梯度；并且用 float64 计算，因为在 float32 下简单 RNN 的梯度会下溢成精确的 0。
        """,
    ),
    code(
        """
        GRADIENT_LENGTH = 2 * LENGTH
        config = LongRangeConfig(task="adding", length=GRADIENT_LENGTH, hidden_size=64)   # the LSTM: chrono init
        flows = gradient_flow(config, models=("rnn", "gru", "lstm"))
        labels = {"rnn": "tanh RNN", "gru": "GRU", "lstm": "LSTM (chrono)"}

        plt.figure(figsize=(7, 4))
        for name, norms in flows.items():
            plt.plot(range(len(norms)), norms, label=labels[name])
        plt.yscale("log")
        plt.xlabel("step t")
        plt.ylabel("||dL/dh_t||")
        plt.title(f"the gradient reaching each step, at initialisation (adding, T = {GRADIENT_LENGTH})")
        plt.legend()
        plt.show()
        for name, norms in flows.items():
            print(f"{labels[name]:14s} ||dL/dh_t|| at the last step {norms[-1]:.1e}, at t = 0 {norms[0]:.1e}: "
                  f"ratio {norms[0] / norms[-1]:.1e}")
        """
    ),
    code(
        en="""
        ratios = {labels[name]: norms[0] / norms[-1] for name, norms in flows.items()}
        Markdown(f"Over {GRADIENT_LENGTH} steps the signal that reaches the first step is "
                 + ", ".join(f"{value:.0e} of the last step's for the {name}" for name, value in ratios.items())
                 + ". In the RNN every step back multiplies it by $W_{hh}^T$ and by $\\\\tanh'$, below 1; "
                 "in the LSTM the path along the cell multiplies it only by $f_t$, which the chrono "
                 "initialisation starts close to 1 for many of the cells."
                 + (" These are gradients at initialisation: the GRU's update gate starts near 1/2, so its "
                    "gradient vanishes at first too, and training moves it towards 1, which is how the GRU "
                    "learned the task above." if results["GRU"][1] is not None else ""))
        """,
        zh="""
        ratios = {labels[name]: norms[0] / norms[-1] for name, norms in flows.items()}
        Markdown(f"经过 {GRADIENT_LENGTH} 步，到达第一步的信号相对于最后一步：" + "，".join(
                     f"{name} 为 {value:.0e}" for name, value in ratios.items())
                 + "。在 RNN 里每往回一步都要乘以 $W_{hh}^T$ 和小于 1 的 $\\\\tanh'$；"
                 "而在 LSTM 里，沿着记忆元这条路只乘以 $f_t$，chrono 初始化让很多单元的 $f_t$ 一开始就接近 1。"
                 + ("注意这些都是初始化时的梯度：GRU 的更新门一开始在 1/2 附近，所以起初它的梯度同样会消失；"
                    "训练会把更新门推向 1，上面的 GRU 就是这样学会这个任务的。" if results["GRU"][1] is not None else ""))
        """,
    ),
    md(
        """
        ## What to take away

        - On a task whose answer lies far back, the simple RNN stays at the chance level; the gated models learn
          it.
        - The reason is the size of the gradient that reaches the early steps: it vanishes in the RNN, and
          travels along the LSTM's cell.
        - The command line runs the same lab, with more tasks, lengths and seeds:
          `lstmkit longrange --task adding --length 100 --model rnn --json`, `lstmkit longrange sweep --help`,
          `lstmkit longrange --task adding --length 100 --steps 0 --plot-gradients grads.png`.

        Next: [5. The learners' four questions](05-four-questions.ipynb).
        """,
        """
        ## 小结

        - 在答案依赖很久以前输入的任务上，简单 RNN 停在随机水平，带门的模型能学会。
        - 原因在于传回早期时间步的梯度大小：在 RNN 中它消失了，在 LSTM 中它沿着记忆元传了回去。
        - 命令行可以运行同一个实验室，任务、长度和随机种子更多：
          `lstmkit longrange --task adding --length 100 --model rnn --json`、`lstmkit longrange sweep --help`、
          `lstmkit longrange --task adding --length 100 --steps 0 --plot-gradients grads.png`。

        下一节：[5. 学习者的四个问题](05-four-questions.ipynb)。
        """,
    ),
]
