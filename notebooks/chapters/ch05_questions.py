"""Chapter 5: the learners' four questions, answered by experiment."""
# ruff: noqa: E501  (prose; the cells' code is checked in the built notebooks: ruff check notebooks/en)

from . import code, md

SLUG = "05-four-questions"
TITLE = {"en": "The learners' four questions", "zh-CN": "学习者的四个问题"}

# Chinese for the comments and docstrings of the shared code cells, applied to the zh-CN notebook only.
ZH_COMMENTS = {
    '# scales the training steps; raise it for a longer run': '# 训练步数的倍数；调大它就训练得更久',
    "# the adding problem's sequence length for the training experiments": '# 训练实验中加法问题的序列长度',
    'Train rnn + a linear head on the adding problem; returns [(step, held-out MSE)].': '在加法问题上训练 rnn 加一个线性输出层；返回 [(步数, 留出均方误差)]。',
    '# read the answer after the last step': '# 读完最后一步后给出答案',
    'The first step at which the held-out MSE is below half the chance level.': '留出均方误差首次低于随机水平一半的步数。',
    "# the forget gate's slice (order i, f, g, o)": '# 遗忘门那一段（顺序为 i、f、g、o）',
    '# the same holds for torch.nn.GRU': '# torch.nn.GRU 也一样',
    '# the state update of the figures': '# 就是图中画的状态更新',
    '# the top layer: (direction, B, H)': '# 最上面一层：(方向, B, H)',
}

CELLS = [
    md(
        """
        # 5. The learners' four questions, by experiment

        Four questions from the Q&A of the course's LSTM chapter:

        1. What if the LSTM had no $C$: replace $C_{t-1}$ by $H_{t-1}$ in the formulas. Can the hidden state carry
           the memory just as well?
        2. Are $I$, $F$, $O$ and $\\tilde C$ initialised to zero, or is there a rule?
        3. How much memory does a model take, and a batch?
        4. `nn.GRU` returns an output $Y$ and a state; the figures show only the state. How is $Y$ computed?

        Each gets an experiment you can rerun and change. The longer measurements behind the same answers are in
        [docs/questions.md](../../docs/questions.md).

        `BUDGET` scales the training steps; at 1 the notebook runs in about a minute on a 2-core CPU.
        """,
        """
        # 5. 学习者的四个问题：用实验来回答

        下面是课程 LSTM 一节问答区里的四个问题：

        1. 如果 LSTM 不要 $C$，把公式中的 $C_{t-1}$ 换成 $H_{t-1}$，好像也能让隐状态把记忆往下传？
        2. $I$、$F$、$O$、$\\tilde C$ 都初始化为 0 吗，还是有什么讲究？
        3. 怎样计算一个模型占用的显存，以及一个 batch 占用的显存？
        4. `nn.GRU` 的输出第一个是 $Y$，第二个是 state；图和公式里都只有 state 的计算，$Y$ 是怎么算出来的？

        每个问题都配一个可以重跑、可以修改的实验。同样问题的更长时间的测量结果见
        [docs/questions.zh-CN.md](../../docs/questions.zh-CN.md)。

        `BUDGET` 决定训练步数；取 1 时整个 notebook 在 2 核 CPU 上大约一分钟。
        """,
    ),
    code(
        """
        BUDGET = 1   # scales the training steps; raise it for a longer run
        LENGTH = 50  # the adding problem's sequence length for the training experiments
        """
    ),
    code(
        """
        import time

        import matplotlib.pyplot as plt
        import torch
        from IPython.display import Markdown
        from torch import nn

        import lstmkit
        from lstmkit.apps.longrange import LongRangeConfig, gradient_flow
        from lstmkit.synthetic import AddingProblem

        torch.manual_seed(0)
        task = AddingProblem(LENGTH)
        x_val, y_val = task.sample(512, torch.Generator().manual_seed(2))


        def train(rnn, steps, hidden_size=64, every=100):
            \"\"\"Train rnn + a linear head on the adding problem; returns [(step, held-out MSE)].\"\"\"
            model = nn.ModuleDict({"rnn": rnn, "head": nn.Linear(hidden_size, 1)})

            def predict(x):
                return model["head"](model["rnn"](x)[0][:, -1:])   # read the answer after the last step

            optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
            data = torch.Generator().manual_seed(1)
            history = []
            for step in range(steps + 1):
                if step % every == 0 or step == steps:
                    with torch.no_grad():
                        history.append((step, task.metric(predict(x_val), y_val)))
                if step == steps:
                    return history
                x, y = task.sample(64, data)
                loss = task.loss(predict(x), y)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()


        def first_solved(history):
            return next((step for step, mse in history if mse <= task.threshold), None)


        def first_left_chance(history):
            \"\"\"The first step at which the held-out MSE is below half the chance level.\"\"\"
            return next((step for step, mse in history if mse < 0.5 * task.baseline), None)

        print(f"adding problem, T = {LENGTH}: chance-level MSE {task.baseline:.4f}, solved at {task.threshold:.5f}")
        """
    ),
    md(
        """
        ## 1. An LSTM without $C$

        The ablation `cell="no_c"` puts $h_{t-1}$ where the LSTM has $c_{t-1}$ and keeps everything else:

        $$c_t = f_t \\odot h_{t-1} + i_t \\odot g_t, \\qquad h_t = o_t \\odot \\tanh(c_t)$$

        From the equations: in the LSTM, $\\partial c_t / \\partial c_{t-1} = f_t$ (plus small terms through the
        gates), a factor the network can hold near 1 for as long as it needs. Without $C$, the path from
        $h_{t-1}$ to $h_t$ is $o_t \\cdot \\tanh'(c_t) \\cdot f_t$: three factors below 1 at every step. So the
        prediction is that the memory, and the gradient with it, vanish at least as fast as in the simple RNN.
        First the gradient at initialisation, then training.
        """,
        """
        ## 1. 没有 $C$ 的 LSTM

        消融实验 `cell="no_c"` 把 LSTM 中 $c_{t-1}$ 的位置换成 $h_{t-1}$，其余不变：

        $$c_t = f_t \\odot h_{t-1} + i_t \\odot g_t, \\qquad h_t = o_t \\odot \\tanh(c_t)$$

        先从公式看：LSTM 中 $\\partial c_t / \\partial c_{t-1} = f_t$（另有经过各个门的小项），网络可以让这个因子在需要的时间里
        一直接近 1。去掉 $C$ 以后，从 $h_{t-1}$ 到 $h_t$ 的路径是 $o_t \\cdot \\tanh'(c_t) \\cdot f_t$：每一步都要乘上三个小于 1 的因子。
        所以可以预测：记忆和梯度都会消失，而且至少和简单 RNN 一样快。下面先看初始化时的梯度，再看训练。
        """,
    ),
    code(
        """
        GRADIENT_LENGTH = 100
        rows = {
            "LSTM, chrono init": LongRangeConfig(task="adding", length=GRADIENT_LENGTH, hidden_size=64),
            "no C, chrono init": LongRangeConfig(task="adding", length=GRADIENT_LENGTH, hidden_size=64,
                                                 variants={"cell": "no_c"}),
        }
        flows = {name: gradient_flow(config, models=("lstm",))["lstm"] for name, config in rows.items()}
        flows["tanh RNN"] = gradient_flow(rows["LSTM, chrono init"], models=("rnn",))["rnn"]

        plt.figure(figsize=(7, 4))
        for name, norms in flows.items():
            plt.plot(norms, label=name)
        plt.yscale("log")
        plt.xlabel("step t")
        plt.ylabel("||dL/dh_t||")
        plt.title(f"with and without the cell, at initialisation (adding, T = {GRADIENT_LENGTH})")
        plt.legend()
        plt.show()
        no_c_ratio = {name: norms[0] / norms[-1] for name, norms in flows.items()}
        for name, ratio in no_c_ratio.items():
            print(f"{name:18s} ||dL/dh_0|| / ||dL/dh_T|| = {ratio:.1e}")
        """
    ),
    code(
        """
        NO_C_STEPS = max(100, round(700 * BUDGET))
        ablation = {}
        for name, options in [("LSTM", {}), ("no C", {"cell": "no_c"})]:
            torch.manual_seed(0)
            rnn = lstmkit.LSTM(2, 64, batch_first=True, init="chrono", chrono_max=task.seq_len, **options)
            start = time.process_time()
            ablation[name] = train(rnn, NO_C_STEPS)
            print(rnn)
            print(f"    {time.process_time() - start:5.1f} CPU s: held-out MSE "
                  + ", ".join(f"{mse:.4f}" for _, mse in ablation[name][1::2]) + " (every 200 steps)")
        """
    ),
    code(
        en="""
        lstm_end, no_c_end = ablation["LSTM"][-1][1], ablation["no C"][-1][1]
        Markdown(f"**Answer.** At initialisation the gradient that reaches $t = 0$ is {no_c_ratio['no C, chrono init']:.0e} "
                 f"of the last step's without $C$, {no_c_ratio['tanh RNN']:.0e} in the tanh RNN and "
                 f"{no_c_ratio['LSTM, chrono init']:.0e} in the LSTM. After the same {NO_C_STEPS} steps of training "
                 f"the LSTM's held-out MSE is {lstm_end:.4f} and the LSTM without $C$'s is {no_c_end:.4f} "
                 f"(chance level {task.baseline:.4f}). "
                 + ("The hidden state cannot carry the memory in place of the cell: it has to pass through "
                    "$o_t \\\\tanh(\\\\cdot)$ at every step, and so does the gradient."
                    if no_c_end > 2 * lstm_end else
                    "In this short run the two are not yet apart; raise `BUDGET` to see them part."))
        """,
        zh="""
        lstm_end, no_c_end = ablation["LSTM"][-1][1], ablation["no C"][-1][1]
        Markdown("**回答：** 初始化时，到达 $t = 0$ 的梯度相对于最后一步："
                 f"去掉 $C$ 后为 {no_c_ratio['no C, chrono init']:.0e}，"
                 f"tanh RNN 为 {no_c_ratio['tanh RNN']:.0e}，LSTM 为 {no_c_ratio['LSTM, chrono init']:.0e}。"
                 f"训练同样的 {NO_C_STEPS} 步之后，LSTM 在留出数据上的均方误差是 {lstm_end:.4f}，"
                 f"去掉 $C$ 的 LSTM 是 {no_c_end:.4f}（随机水平为 {task.baseline:.4f}）。"
                 + ("隐状态无法代替记忆元来传递记忆：它每一步都要经过 $o_t \\\\tanh(\\\\cdot)$，梯度也一样。"
                    if no_c_end > 2 * lstm_end else
                    "在这么短的训练里两者还没有拉开差距；调大 `BUDGET` 就能看到它们分开。"))
        """,
    ),
    md(
        """
        ## 2. How are the gates initialised?

        The weights are random (in `torch.nn`, uniform in $\\pm 1/\\sqrt{H}$); the rule, if any, is in the
        **biases**. At the start, with small weights, each gate sits near $\\sigma(b)$. The forget gate's bias
        decides how long the cell keeps its content: with $f$ constant, a share $f^k$ survives $k$ steps, and
        $1/(1-f)$ is the cell's memory length in steps. `lstmkit.LSTM` offers:

        - `init="torch"` (the default, `torch.nn`'s): every bias uniform in $\\pm 1/\\sqrt{H}$, gates near 1/2;
        - `init="zeros"`: every bias 0, the same gates of 1/2 without the noise;
        - `forget_bias=1.0` (Gers et al. 2000; Jozefowicz et al. 2015): $f \\approx \\sigma(1) \\approx 0.73$;
        - `init="chrono", chrono_max=T` (Tallec & Ollivier 2018): forget bias $\\log u$, $u \\sim U[1, T-1]$ per
          cell, and the input bias its negative: the cells' memories span 1 to $T$ steps from the start.
        """,
        """
        ## 2. 门是怎样初始化的？

        权重是随机的（`torch.nn` 中服从 $\\pm 1/\\sqrt{H}$ 之间的均匀分布）；如果说有什么讲究，讲究在**偏置**上。
        刚开始时权重很小，每个门大约等于 $\\sigma(b)$。遗忘门的偏置决定了记忆元能把内容保留多久：
        若 $f$ 保持不变，$k$ 步之后还剩 $f^k$，$1/(1-f)$ 就是记忆元以步数计的“记忆长度”。`lstmkit.LSTM` 提供：

        - `init="torch"`（默认，与 `torch.nn` 相同）：所有偏置在 $\\pm 1/\\sqrt{H}$ 之间均匀分布，各门都在 1/2 附近；
        - `init="zeros"`：所有偏置为 0，同样是 1/2，只是没有噪声；
        - `forget_bias=1.0`（Gers 等 2000；Jozefowicz 等 2015）：$f \\approx \\sigma(1) \\approx 0.73$；
        - `init="chrono", chrono_max=T`（Tallec 和 Ollivier 2018）：每个单元的遗忘门偏置为 $\\log u$，
          $u \\sim U[1, T-1]$，输入门偏置取它的相反数：从一开始，各单元的记忆长度就分布在 1 到 $T$ 步之间。
        """,
    ),
    code(
        """
        H = 64
        inits = {
            "torch": {"init": "torch"},
            "zeros": {"init": "zeros"},
            "forget bias 1": {"forget_bias": 1.0},
            "chrono": {"init": "chrono", "chrono_max": task.seq_len},
        }
        print(f"{'init':14s} {'f at the start: min':>20s} {'median':>7s} {'max':>6s}   memory 1/(1-f), median and max (steps)")
        for name, options in inits.items():
            torch.manual_seed(0)
            lstm = lstmkit.LSTM(2, H, **options)
            b_f = (lstm.bias_ih_l0 + lstm.bias_hh_l0)[H:2 * H].detach()   # the forget gate's slice (order i, f, g, o)
            f = torch.sigmoid(b_f)
            memory = 1 / (1 - f)
            print(f"{name:14s} {f.min():20.3f} {f.median():7.3f} {f.max():6.3f}   {memory.median():6.1f} {memory.max():6.1f}")
        """
    ),
    code(
        """
        configs = {
            "torch": LongRangeConfig(task="adding", length=GRADIENT_LENGTH, hidden_size=H, init="torch"),
            "zeros": LongRangeConfig(task="adding", length=GRADIENT_LENGTH, hidden_size=H, init="zeros"),
            "forget bias 1": LongRangeConfig(task="adding", length=GRADIENT_LENGTH, hidden_size=H, init="forget1"),
            "chrono": LongRangeConfig(task="adding", length=GRADIENT_LENGTH, hidden_size=H, init="chrono"),
        }
        init_ratio = {}
        for name, config in configs.items():
            norms = gradient_flow(config, models=("lstm",))["lstm"]
            init_ratio[name] = norms[0] / norms[-1]
            print(f"{name:14s} gradient at t = 0 / at t = {GRADIENT_LENGTH - 1}: {init_ratio[name]:.1e}")

        INIT_STEPS = max(100, round(800 * BUDGET))
        race = {}
        for name, options in inits.items():
            torch.manual_seed(0)
            race[name] = train(lstmkit.LSTM(2, H, batch_first=True, **options), INIT_STEPS)
            solved, left = first_solved(race[name]), first_left_chance(race[name])
            print(f"{name:14s} held-out MSE after {INIT_STEPS} steps {race[name][-1][1]:.4f}; "
                  + (f"below half the chance level from step {left}; " if left is not None else "at the chance level; ")
                  + (f"solved at step {solved}" if solved is not None else "not solved"))

        plt.figure(figsize=(7, 4))
        for name, history in race.items():
            plt.plot([s for s, _ in history], [m for _, m in history], label=name)
        plt.axhline(task.baseline, color="grey", linestyle="--", label="chance level")
        plt.axhline(task.threshold, color="grey", linestyle=":", label="solved")
        plt.yscale("log")
        plt.xlabel("training step")
        plt.ylabel("held-out MSE")
        plt.title(f"LSTM initialisations on the adding problem, T = {LENGTH}")
        plt.legend()
        plt.show()
        """
    ),
    code(
        en="""
        def outcome(name):
            solved, left = first_solved(race[name]), first_left_chance(race[name])
            if solved is not None:
                return f"{name} solved it at step {solved}"
            if left is not None:
                return f"{name} left the chance level at step {left} (final MSE {race[name][-1][1]:.4f})"
            return f"{name} stayed at the chance level"

        Markdown("**Answer.** Not zeros for the forget gate if the memory must last. With biases near 0 the "
                 "forget gate starts at 1/2 and the cell halves its content every step; chrono starts some cells "
                 f"with memories of up to {task.seq_len} steps, and the gradient reaching $t = 0$ over "
                 f"{GRADIENT_LENGTH} steps is {init_ratio['chrono']:.0e} of the last step's with chrono against "
                 f"{init_ratio['zeros']:.0e} with zeros and {init_ratio['torch']:.0e} with torch's default. "
                 f"In training, on this seed, after {INIT_STEPS} steps: "
                 + "; ".join(outcome(name) for name in race) + ". One seed and one short run: "
                 "[docs/questions.md](../../docs/questions.md) has the longer, multi-task measurement "
                 "(temporal order at T = 100: only chrono solved it within 1,500 steps).")
        """,
        zh="""
        def outcome(name):
            solved, left = first_solved(race[name]), first_left_chance(race[name])
            if solved is not None:
                return f"{name} 在第 {solved} 步解决"
            if left is not None:
                return f"{name} 在第 {left} 步离开随机水平（最终均方误差 {race[name][-1][1]:.4f}）"
            return f"{name} 一直停在随机水平"

        Markdown("**回答：** 如果记忆需要保持很久，遗忘门就不该从 0 偏置开始。偏置接近 0 时遗忘门一开始约为 1/2，"
                 "记忆元每一步都要丢掉一半内容；chrono 让一部分单元一开始就拥有最长 "
                 f"{task.seq_len} 步的记忆。经过 {GRADIENT_LENGTH} 步后，到达 $t = 0$ 的梯度相对于最后一步："
                 f"chrono 为 {init_ratio['chrono']:.0e}，全零为 {init_ratio['zeros']:.0e}，"
                 f"torch 默认为 {init_ratio['torch']:.0e}。"
                 f"训练方面，在这个随机种子下训练 {INIT_STEPS} 步："
                 + "；".join(outcome(name) for name in race) + "。这只是一个种子、一次短训练："
                 "更长时间、更多任务的测量见 [docs/questions.zh-CN.md](../../docs/questions.zh-CN.md)"
                 "（在 T = 100 的时序问题上，1,500 步内只有 chrono 解决了）。")
        """,
    ),
    md(
        """
        ## 3. How much memory: the model, and a batch

        **The model**: its parameters times 4 bytes in float32; for training, as much again for the gradients,
        and AdamW keeps two moments, twice more. **A batch**: what the forward pass keeps for the backward pass,
        per layer, step and sequence of the batch: a few vectors of size $H$ (the gates, the cell, $h$), so it
        grows with batch $\\times$ steps $\\times$ $H$. `lstmkit.memory.memory_estimate` counts all of it for
        each engine; `lstmkit.memory.measure_peak_bytes` runs a real training step on this CPU and measures the
        allocator's peak with `torch.profiler` (which logs a start and a stop line on stderr for each
        measurement; the stored outputs leave them out).
        """,
        """
        ## 3. 占多少内存：模型，以及一个 batch

        **模型**：float32 下参数个数乘以 4 字节；训练时，梯度再占同样多，AdamW 还要保存两份动量，又是两倍。
        **一个 batch**：前向传播为反向传播保存下来的东西，每一层、每个时间步、batch 里的每条序列都要存几个长度为 $H$
        的向量（各个门、记忆元、$h$），所以它随 batch 大小 × 步数 × $H$ 增长。`lstmkit.memory.memory_estimate`
        按引擎把这些全部算出来；`lstmkit.memory.measure_peak_bytes` 则在本机 CPU 上真正跑一步训练，
        用 `torch.profiler` 测量内存分配器的峰值（每次测量它都会在 stderr 上打印开始和结束两行日志，保存的输出里略去了）。
        在 GPU 上占用的就是显存，道理相同。
        """,
    ),
    code(
        """
        MiB = 2 ** 20
        X_SIZE, H_SIZE, SEQ = 64, 128, 50
        model_estimate = lstmkit.memory.memory_estimate(X_SIZE, H_SIZE, batch=1, seq_len=1, train=True)
        m = model_estimate
        print(f"the model: {m.parameters:,} parameters = {m.parameter_formula}; {m.parameter_bytes / MiB:.2f} MiB of "
              f"weights, {m.gradient_bytes / MiB:.2f} MiB of gradients, {m.optimizer_bytes / MiB:.2f} MiB of AdamW state")

        print(f"\\n{'engine':9s} {'batch':>5s}  {'activations':>11s}  {'estimated peak':>14s}  {'measured peak':>13s}  diff.")
        memory_rows = []
        for engine in ("reference", "native"):
            for batch in (16, 64):
                sizes = dict(batch=batch, seq_len=SEQ, train=True, engine=engine)
                estimate = lstmkit.memory.memory_estimate(X_SIZE, H_SIZE, **sizes)
                measured = lstmkit.memory.measure_peak_bytes(X_SIZE, H_SIZE, **sizes)
                difference = estimate.peak_bytes / measured - 1
                memory_rows.append(difference)
                print(f"{engine:9s} {batch:5d}  {estimate.activation_bytes / MiB:8.2f} MiB  "
                      f"{estimate.peak_bytes / MiB:10.2f} MiB  {measured / MiB:9.2f} MiB  {difference:+.1%}")
        """
    ),
    code(
        en="""
        worst = max(abs(d) for d in memory_rows)
        Markdown(f"**Answer.** The model: parameters $\\\\times$ 4 bytes ({model_estimate.parameter_bytes / MiB:.2f} MiB here), "
                 "times 4 in training with AdamW (weights, gradients, two moments). The batch: what the engine "
                 "keeps per step and sequence, times steps times batch size. The estimate is within "
                 f"{worst:.1%} of the measured peak in the rows above; `lstmkit memory --input-size 64 "
                 "--hidden-size 128 --batch 16 --seq-len 50 --train` prints the same from the command line, and "
                 "[docs/inspect.md](../../docs/inspect.md) compares 36 configurations.")
        """,
        zh="""
        worst = max(abs(d) for d in memory_rows)
        Markdown(f"**回答：** 模型占用的是参数个数 $\\\\times$ 4 字节（这里是 {model_estimate.parameter_bytes / MiB:.2f} MiB），"
                 "用 AdamW 训练时再乘以 4（权重、梯度、两份动量）。一个 batch 占用的是引擎在每个时间步、每条序列上保存的量，"
                 "乘以步数和 batch 大小。上表中估计值与实测峰值的差距在 "
                 f"{worst:.1%} 以内；命令行 `lstmkit memory --input-size 64 --hidden-size 128 --batch 16 --seq-len 50 --train` "
                 "给出同样的结果，[docs/inspect.md](../../docs/inspect.md) 比较了 36 种配置。")
        """,
    ),
    md(
        """
        ## 4. How is `nn.GRU`'s output $Y$ computed?

        It is not computed by anything extra: $Y$ is the top layer's hidden state $h_t$ at every step, stacked
        over time. We recompute it step by step with a `GRUCell` on the same weights.
        """,
        """
        ## 4. `nn.GRU` 的输出 $Y$ 是怎么算的？

        并没有额外的计算：$Y$ 就是最上面一层在每个时间步的隐状态 $h_t$，按时间堆叠起来。
        下面用同样权重的 `GRUCell` 一步一步地把它重新算一遍。
        """,
    ),
    code(
        """
        torch.manual_seed(0)
        x = torch.randn(6, 3, 4)                                    # (T, B, input_size)
        gru = lstmkit.GRU(4, 5)                                     # the same holds for torch.nn.GRU
        y, h_n = gru(x)                                             # y (6, 3, 5), h_n (1, 3, 5)

        cell = torch.nn.GRUCell(4, 5)
        cell.load_state_dict({name[:-3]: p for name, p in gru.state_dict().items()})   # weight_ih_l0 -> weight_ih
        h, steps = torch.zeros(3, 5), []
        for t in range(6):
            h = cell(x[t], h)                                       # the state update of the figures
            steps.append(h)
        print("Y equals (h_1, ..., h_T):", torch.allclose(y, torch.stack(steps), atol=1e-6))
        print("h_n equals Y's last step:", torch.allclose(h_n[0], y[-1]))
        assert torch.allclose(y, torch.stack(steps), atol=1e-6) and torch.allclose(h_n[0], y[-1])
        """
    ),
    md(
        """
        With two layers and both directions, $Y$ is the **top** layer's $h_t$, forward and backward side by
        side; the state $h_n$ holds every layer's last step. The backward direction reads the sequence from the
        end, so its "last" step is $Y$'s *first*.
        """,
        """
        两层、双向时，$Y$ 是**最上面一层**的 $h_t$，前向和后向并排拼在一起；状态 $h_n$ 保存的是每一层的最后一步。
        后向方向是从序列末尾往前读的，所以它的“最后一步”是 $Y$ 的**第一步**。
        """,
    ),
    code(
        """
        bi = lstmkit.GRU(4, 5, num_layers=2, bidirectional=True)
        y, h_n = bi(x)                                              # y (6, 3, 10), h_n (2 layers * 2 directions, 3, 5)
        top = h_n.view(2, 2, 3, 5)[-1]                              # the top layer: (direction, B, H)
        print("Y:", tuple(y.shape), "h_n:", tuple(h_n.shape))
        print("forward h_n = Y's last step, first half:  ", torch.allclose(top[0], y[-1, :, :5]))
        print("backward h_n = Y's FIRST step, second half:", torch.allclose(top[1], y[0, :, 5:]))
        assert torch.allclose(top[0], y[-1, :, :5]) and torch.allclose(top[1], y[0, :, 5:])
        """
    ),
    md(
        """
        **Answer.** $Y = (h_1, \\dots, h_T)$ of the top layer (both directions concatenated); the state is the
        last step of every layer, which for the backward direction is the first step of the sequence. The same
        holds for the LSTM, whose extra state $c_n$ is what $Y$ does not show. A prediction layer on top of $Y$
        (the `nn.Linear` of chapter 2's language model) is the user's own layer, not part of the RNN.

        Back to the start: [1. The LSTM from its equations](01-lstm-from-equations.ipynb).
        """,
        """
        **回答：** $Y = (h_1, \\dots, h_T)$，取自最上面一层（双向时两个方向拼接）；状态是每一层的最后一步，
        对后向方向而言就是序列的第一步。LSTM 也是如此，它多出来的状态 $c_n$ 正是 $Y$ 里看不到的部分。
        $Y$ 之上的预测层（第 2 节语言模型中的 `nn.Linear`）是用户自己加的层，不属于 RNN 本身。

        回到开头：[1. 从公式出发写出 LSTM](01-lstm-from-equations.ipynb)。
        """,
    ),
]
