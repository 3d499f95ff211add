"""Chapter 1: the LSTM from its equations, checked against lstmkit and torch.nn; the parameter count; the GRU."""
# ruff: noqa: E501  (prose; the cells' code is checked in the built notebooks: ruff check notebooks/en)

from . import code, md

SLUG = "01-lstm-from-equations"
TITLE = {"en": "The LSTM from its equations", "zh-CN": "从公式出发写出 LSTM"}

# Chinese for the comments and docstrings of the shared code cells, applied to the zh-CN notebook only.
ZH_COMMENTS = {
    '# scales how many random sizes the checks run on; raise it for a longer check': '# 检查多少组随机尺寸；调大它就检查得更多',
    'One LSTM step for a batch: x (B, X); h, c (B, H); W_x (4H, X); W_h (4H, H); b (4H,).': 'LSTM 的一步（一个批量）：x (B, X)；h、c (B, H)；W_x (4H, X)；W_h (4H, H)；b (4H,)。',
    '# (B, 4H): the four pre-activations at once': '# (B, 4H)：一次算出四个门的输入',
    "# torch.nn's order: i, f, g, o": '# torch.nn 的顺序：i、f、g、o',
    '# input gate, in (0, 1)': '# 输入门，取值在 (0, 1)',
    '# forget gate, in (0, 1)': '# 遗忘门，取值在 (0, 1)',
    '# candidate memory, in (-1, 1)': '# 候选记忆元，取值在 (-1, 1)',
    '# output gate, in (0, 1)': '# 输出门，取值在 (0, 1)',
    '# the memory cell': '# 记忆元',
    '# the hidden state': '# 隐状态',
    'x (T, B, X) -> outputs (T, B, H) and the last (h, c), from a zero state.': 'x (T, B, X) -> 输出 (T, B, H) 和最后的 (h, c)，从零状态开始。',
    '# one step per time step: this loop is the recurrence': '# 每个时间步走一步：这个循环就是“循环”神经网络的循环',
    '# input size, hidden size, steps, batch': '# 输入大小、隐藏大小、步数、批量大小',
    '# any scalar function of the output will do': '# 输出的任意标量函数都可以',
    "# weights + torch.nn's two bias vectors": '# 权重 + torch.nn 的两组偏置',
    "# the (28, 256) one is D2L's character LSTM": '# (28, 256) 就是 D2L 的字符级 LSTM',
    '# and a few random ones': '# 再加几组随机尺寸',
    'One GRU step: x (B, X); h (B, H); W_x (3H, X); W_h (3H, H); order r, z, n as in torch.nn.': 'GRU 的一步：x (B, X)；h (B, H)；W_x (3H, X)；W_h (3H, H)；顺序与 torch.nn 相同：r、z、n。',
    '# reset gate': '# 重置门',
    '# update gate': '# 更新门',
    '# reset before the matrix': '# 先重置，再乘矩阵',
    '# torch.nn: reset after it': '# torch.nn：先乘矩阵，再重置',
    '# keep the old h where z is near 1': '# z 接近 1 的地方保留旧的 h',
}

CELLS = [
    md(
        """
        # 1. The LSTM from its equations

        An LSTM step reads the input $x_t$ and the previous hidden state $h_{t-1}$, and computes three gates and
        a candidate memory, each a linear map of $[x_t, h_{t-1}]$ followed by a squashing function:

        $$
        \\begin{aligned}
        i_t &= \\sigma(W_{xi} x_t + W_{hi} h_{t-1} + b_i) && \\text{input gate: how much new content to write}\\\\
        f_t &= \\sigma(W_{xf} x_t + W_{hf} h_{t-1} + b_f) && \\text{forget gate: how much old content to keep}\\\\
        o_t &= \\sigma(W_{xo} x_t + W_{ho} h_{t-1} + b_o) && \\text{output gate: how much of the cell to show}\\\\
        g_t &= \\tanh(W_{xg} x_t + W_{hg} h_{t-1} + b_g) && \\text{candidate memory } \\tilde c_t\\\\
        c_t &= f_t \\odot c_{t-1} + i_t \\odot g_t && \\text{the memory cell}\\\\
        h_t &= o_t \\odot \\tanh(c_t) && \\text{the hidden state}
        \\end{aligned}
        $$

        This notebook writes these six lines in PyTorch, checks them against `lstmkit.LSTM` (its `reference`
        engine, the textbook equations gate by gate) and against `torch.nn.LSTM` on the same weights, counts the
        parameters, and then does the same for the GRU.

        `BUDGET` below sets how many random sizes the checks run on; 1 takes a few seconds.
        """,
        """
        # 1. 从公式出发写出 LSTM

        LSTM 在每个时间步读入当前输入 $x_t$ 和上一步的隐状态 $h_{t-1}$，先算出三个门和一个候选记忆元。
        它们都是 $[x_t, h_{t-1}]$ 的线性变换，再经过一个“压缩”函数：门用 sigmoid，取值在 0 到 1 之间；
        候选记忆元用 tanh，取值在 -1 到 1 之间。

        $$
        \\begin{aligned}
        i_t &= \\sigma(W_{xi} x_t + W_{hi} h_{t-1} + b_i) && \\text{输入门：新内容写进去多少}\\\\
        f_t &= \\sigma(W_{xf} x_t + W_{hf} h_{t-1} + b_f) && \\text{遗忘门：旧内容留下多少}\\\\
        o_t &= \\sigma(W_{xo} x_t + W_{ho} h_{t-1} + b_o) && \\text{输出门：记忆元拿出来多少}\\\\
        g_t &= \\tanh(W_{xg} x_t + W_{hg} h_{t-1} + b_g) && \\text{候选记忆元 } \\tilde c_t\\\\
        c_t &= f_t \\odot c_{t-1} + i_t \\odot g_t && \\text{记忆元}\\\\
        h_t &= o_t \\odot \\tanh(c_t) && \\text{隐状态}
        \\end{aligned}
        $$

        这一节我们把这六行公式原样写成 PyTorch 代码，然后拿它和 `lstmkit.LSTM`（`reference` 引擎，
        就是按教科书逐个门计算的实现）以及 `torch.nn.LSTM` 在同一组权重上比一比；接着数一数参数量；
        最后用同样的办法看看 GRU。

        下面的 `BUDGET` 决定检查多少组随机尺寸；取 1 时几秒钟就能跑完。
        """,
    ),
    code(
        """
        BUDGET = 1  # scales how many random sizes the checks run on; raise it for a longer check
        """
    ),
    code(
        """
        import torch

        import lstmkit

        torch.manual_seed(0)
        print("torch", torch.__version__, "| lstmkit", lstmkit.__version__)
        """
    ),
    md(
        """
        ## One step, then a sequence

        PyTorch stores the four maps of one layer stacked in one matrix: `weight_ih_l0` is $W_x$ of shape
        `(4H, X)` and `weight_hh_l0` is $W_h$ of shape `(4H, H)`, in the order **i, f, g, o**. So one matrix
        product gives all four pre-activations, and `chunk(4)` cuts them apart. PyTorch also keeps two bias
        vectors (`bias_ih_l0` and `bias_hh_l0`); only their sum matters.
        """,
        """
        ## 先写一步，再写整条序列

        PyTorch 把一层的四组权重竖着拼在一个矩阵里：`weight_ih_l0` 就是形状为 `(4H, X)` 的 $W_x$，
        `weight_hh_l0` 就是形状为 `(4H, H)` 的 $W_h$，顺序是 **i、f、g、o**。所以做一次矩阵乘法就得到四个门
        的输入，再用 `chunk(4)` 切开即可。PyTorch 还有两个偏置向量（`bias_ih_l0` 和 `bias_hh_l0`），
        起作用的只是它们的和。
        """,
    ),
    code(
        """
        def lstm_step(x, h, c, W_x, W_h, b):
            \"\"\"One LSTM step for a batch: x (B, X); h, c (B, H); W_x (4H, X); W_h (4H, H); b (4H,).\"\"\"
            z = x @ W_x.T + h @ W_h.T + b          # (B, 4H): the four pre-activations at once
            z_i, z_f, z_g, z_o = z.chunk(4, dim=1)  # torch.nn's order: i, f, g, o
            i = torch.sigmoid(z_i)                  # input gate, in (0, 1)
            f = torch.sigmoid(z_f)                  # forget gate, in (0, 1)
            g = torch.tanh(z_g)                     # candidate memory, in (-1, 1)
            o = torch.sigmoid(z_o)                  # output gate, in (0, 1)
            c = f * c + i * g                       # the memory cell
            h = o * torch.tanh(c)                   # the hidden state
            return h, c


        def lstm_forward(x, W_x, W_h, b):
            \"\"\"x (T, B, X) -> outputs (T, B, H) and the last (h, c), from a zero state.\"\"\"
            h = c = x.new_zeros(x.shape[1], W_h.shape[1])
            outputs = []
            for x_t in x:                           # one step per time step: this loop is the recurrence
                h, c = lstm_step(x_t, h, c, W_x, W_h, b)
                outputs.append(h)
            return torch.stack(outputs), (h, c)
        """
    ),
    md(
        """
        ## The same weights in three implementations

        We build an `lstmkit.LSTM` with the reference engine, copy its `state_dict` into a `torch.nn.LSTM`
        (the parameter names are the same), and run all three on one batch.
        """,
        """
        ## 同一组权重，三种实现

        先建一个使用 reference 引擎的 `lstmkit.LSTM`，再把它的 `state_dict` 原封不动地装进 `torch.nn.LSTM`
        （两者参数名完全相同），然后让三者读同一批数据。
        """,
    ),
    code(
        """
        X, H, T, B = 5, 8, 20, 3                      # input size, hidden size, steps, batch
        ours = lstmkit.LSTM(X, H, engine="reference")
        theirs = torch.nn.LSTM(X, H)
        theirs.load_state_dict(ours.state_dict())

        x = torch.randn(T, B, X)
        with torch.no_grad():
            b = ours.bias_ih_l0 + ours.bias_hh_l0
            y_eq, (h_eq, c_eq) = lstm_forward(x, ours.weight_ih_l0, ours.weight_hh_l0, b)
            y_ref, (h_ref, c_ref) = ours(x)
            y_nn, (h_nn, c_nn) = theirs(x)

        print("output shape", tuple(y_eq.shape), "| state shapes", tuple(h_ref.shape), tuple(c_ref.shape))
        print(f"largest |difference|, our equations vs lstmkit reference: {(y_eq - y_ref).abs().max():.2e}")
        print(f"largest |difference|, our equations vs torch.nn.LSTM:      {(y_eq - y_nn).abs().max():.2e}")
        print(f"largest |difference| of the final cell c_T vs torch.nn:   {(c_eq - c_nn[0]).abs().max():.2e}")
        assert torch.allclose(y_eq, y_ref, atol=1e-6) and torch.allclose(y_eq, y_nn, atol=1e-6)
        assert torch.allclose(c_eq, c_ref[0], atol=1e-6) and torch.allclose(c_eq, c_nn[0], atol=1e-6)
        """
    ),
    md(
        """
        The differences printed above are float32 rounding: the six lines *are* the LSTM of `torch.nn`. (The
        `assert` lines make the notebook fail if they ever were not.) Note what the output is: `y[t]` is $h_t$
        at every step, and the state returned beside it is the last $h_T$ and the last cell $c_T$.

        The same holds with gradients. Here `lstmkit`'s reference engine and its `native` engine (PyTorch's own
        fused kernel) run the same weights, and the gradients of the weights are compared with `torch.nn`'s:
        """,
        """
        上面打印出的差别只是 float32 的舍入误差：这六行公式**就是** `torch.nn` 里的 LSTM。
        （`assert` 保证了这一点：一旦不成立，整个 notebook 就会报错。）顺便注意输出是什么：`y[t]` 就是每一步的
        $h_t$，和它一起返回的状态是最后一步的 $h_T$ 和记忆元 $c_T$。

        反向传播也一样。下面让 `lstmkit` 的 reference 引擎和 `native` 引擎（PyTorch 自带的融合内核）跑同一组权重，
        再把权重的梯度和 `torch.nn` 的比较：
        """,
    ),
    code(
        """
        def weight_grads(module, x):
            module.zero_grad()
            y, _ = module(x)
            (y ** 2).sum().backward()               # any scalar function of the output will do
            return {name: p.grad.clone() for name, p in module.named_parameters()}

        expected = weight_grads(theirs, x)
        for engine in ("reference", "native"):
            module = lstmkit.LSTM(X, H, engine=engine)
            module.load_state_dict(theirs.state_dict())
            grads = weight_grads(module, x)
            worst = max((grads[name] - expected[name]).abs().max().item() for name in expected)
            print(f"engine {engine:9s}: largest |gradient difference| vs torch.nn = {worst:.2e}")
            assert worst < 1e-4
        """
    ),
    md(
        """
        ## Counting the parameters: $4h(h+x)$

        Each of the four maps has a weight matrix on $x_t$ ($h \\times x$) and one on $h_{t-1}$ ($h \\times h$),
        so one layer has $4h(h + x)$ weights, plus biases: $4h$ in the textbook, $2 \\cdot 4h$ in PyTorch,
        which keeps two bias vectors. A second layer reads the first layer's $h$, so its $x$ is $h$.
        """,
        """
        ## 数参数：$4h(h+x)$

        四组变换中，每一组都有一个作用在 $x_t$ 上的矩阵（$h \\times x$）和一个作用在 $h_{t-1}$ 上的矩阵
        （$h \\times h$），所以一层共有 $4h(h + x)$ 个权重，再加上偏置：教材里是 $4h$ 个，PyTorch 保留了两组
        偏置，是 $2 \\cdot 4h$ 个。第二层读的是第一层的 $h$，所以它的 $x$ 就是 $h$。
        """,
    ),
    code(
        """
        def by_formula(x, h, num_layers=1):
            total = 0
            for layer in range(num_layers):
                inputs = x if layer == 0 else h
                total += 4 * h * (h + inputs) + 2 * 4 * h   # weights + torch.nn's two bias vectors
            return total

        sizes = [(X, H, 1), (28, 256, 1), (10, 20, 2)]          # the (28, 256) one is D2L's character LSTM
        generator = torch.Generator().manual_seed(1)
        for _ in range(max(1, round(3 * BUDGET))):               # and a few random ones
            x_size, h_size, layers = (int(v) for v in torch.randint(1, 64, (3,), generator=generator))
            sizes.append((x_size, h_size, 1 + layers % 3))

        print(f"{'x':>4} {'h':>4} {'layers':>6} {'formula':>9} {'parameter_count':>15} {'lstmkit.LSTM':>12} {'nn.LSTM':>9}")
        for x_size, h_size, layers in sizes:
            formula = by_formula(x_size, h_size, layers)
            counted = lstmkit.parameter_count(x_size, h_size, num_layers=layers).total
            in_lstmkit = sum(p.numel() for p in lstmkit.LSTM(x_size, h_size, layers).parameters())
            in_torch = sum(p.numel() for p in torch.nn.LSTM(x_size, h_size, layers).parameters())
            print(f"{x_size:>4} {h_size:>4} {layers:>6} {formula:>9,} {counted:>15,} {in_lstmkit:>12,} {in_torch:>9,}")
            assert formula == counted == in_lstmkit == in_torch
        """
    ),
    md(
        """
        The four columns agree on every row. `lstmkit.parameter_count` also says where the parameters sit,
        layer by layer:
        """,
        """
        每一行的四列数字都相同。`lstmkit.parameter_count` 还能告诉我们参数在哪一层：
        """,
    ),
    code(
        """
        count = lstmkit.parameter_count(10, 20, num_layers=2)
        for layer in count.layers:
            print(f"layer {layer.layer}: {layer.formula} = {layer.gate_weights:,} gate weights"
                  f" + {layer.biases} biases = {layer.total:,}")
        print(f"total {count.total:,}")
        """
    ),
    md(
        """
        ## The GRU beside it

        The GRU (Cho et al., 2014) has no separate memory cell and two gates instead of three: a reset gate $r$
        and an update gate $z$. In `torch.nn`'s form (and `lstmkit.GRU`'s):

        $$
        \\begin{aligned}
        r_t &= \\sigma(W_{xr} x_t + b_{xr} + W_{hr} h_{t-1} + b_{hr})\\\\
        z_t &= \\sigma(W_{xz} x_t + b_{xz} + W_{hz} h_{t-1} + b_{hz})\\\\
        n_t &= \\tanh(W_{xn} x_t + b_{xn} + r_t \\odot (W_{hn} h_{t-1} + b_{hn}))\\\\
        h_t &= (1 - z_t) \\odot n_t + z_t \\odot h_{t-1}
        \\end{aligned}
        $$

        One detail differs from the textbook form, where the reset gate multiplies $h_{t-1}$ *before* the
        matrix, $W_{hn}(r_t \\odot h_{t-1})$: PyTorch (like cuDNN) applies it *after*. Both are GRUs; they are not
        the same function of the same weights, and the cell below shows by how much.
        """,
        """
        ## 旁边的 GRU

        GRU（Cho 等，2014）没有单独的记忆元，门也只有两个：重置门 $r$ 和更新门 $z$。`torch.nn`
        （以及 `lstmkit.GRU`）的写法是：

        $$
        \\begin{aligned}
        r_t &= \\sigma(W_{xr} x_t + b_{xr} + W_{hr} h_{t-1} + b_{hr})\\\\
        z_t &= \\sigma(W_{xz} x_t + b_{xz} + W_{hz} h_{t-1} + b_{hz})\\\\
        n_t &= \\tanh(W_{xn} x_t + b_{xn} + r_t \\odot (W_{hn} h_{t-1} + b_{hn}))\\\\
        h_t &= (1 - z_t) \\odot n_t + z_t \\odot h_{t-1}
        \\end{aligned}
        $$

        有一处和教材不同：教材里重置门先乘在 $h_{t-1}$ 上再做矩阵乘法，即 $W_{hn}(r_t \\odot h_{t-1})$；
        PyTorch（和 cuDNN 一样）是在矩阵乘法**之后**再乘。两种都是 GRU，但同一组权重算出的结果并不相同，
        下面的代码会给出差多少。
        """,
    ),
    code(
        """
        def gru_step(x, h, W_x, W_h, b_x, b_h, textbook=False):
            \"\"\"One GRU step: x (B, X); h (B, H); W_x (3H, X); W_h (3H, H); order r, z, n as in torch.nn.\"\"\"
            x_r, x_z, x_n = (x @ W_x.T + b_x).chunk(3, dim=1)
            W_hr, W_hz, W_hn = W_h.chunk(3, dim=0)
            b_hr, b_hz, b_hn = b_h.chunk(3)
            r = torch.sigmoid(x_r + h @ W_hr.T + b_hr)            # reset gate
            z = torch.sigmoid(x_z + h @ W_hz.T + b_hz)            # update gate
            if textbook:
                n = torch.tanh(x_n + (r * h) @ W_hn.T + b_hn)     # reset before the matrix
            else:
                n = torch.tanh(x_n + r * (h @ W_hn.T + b_hn))     # torch.nn: reset after it
            return (1 - z) * n + z * h                            # keep the old h where z is near 1


        def gru_forward(x, gru, textbook=False):
            h = x.new_zeros(x.shape[1], gru.hidden_size)
            outputs = []
            for x_t in x:
                h = gru_step(x_t, h, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0, textbook)
                outputs.append(h)
            return torch.stack(outputs)

        gru = lstmkit.GRU(X, H, engine="reference")
        torch_gru = torch.nn.GRU(X, H)
        torch_gru.load_state_dict(gru.state_dict())
        with torch.no_grad():
            y_eq = gru_forward(x, gru)
            y_book = gru_forward(x, gru, textbook=True)
            y_ref, _ = gru(x)
            y_nn, _ = torch_gru(x)
        print(f"GRU, our equations vs lstmkit.GRU:   {(y_eq - y_ref).abs().max():.2e}")
        print(f"GRU, our equations vs torch.nn.GRU:  {(y_eq - y_nn).abs().max():.2e}")
        print(f"GRU, the textbook's reset placement vs torch.nn: {(y_book - y_nn).abs().max():.2e}")
        assert torch.allclose(y_eq, y_ref, atol=1e-6) and torch.allclose(y_eq, y_nn, atol=1e-6)
        """
    ),
    md(
        """
        Three maps instead of four: the GRU has three quarters of the LSTM's parameters for the same sizes,
        $3h(h+x)$ weights and, in PyTorch, $2 \\cdot 3h$ biases.
        """,
        """
        GRU 只有三组变换，LSTM 有四组：同样的尺寸下，GRU 的参数量是 LSTM 的四分之三，即 $3h(h+x)$
        个权重，在 PyTorch 里再加 $2 \\cdot 3h$ 个偏置。
        """,
    ),
    code(
        """
        for x_size, h_size in [(X, H), (28, 256)]:
            lstm_count = sum(p.numel() for p in torch.nn.LSTM(x_size, h_size).parameters())
            gru_count = sum(p.numel() for p in lstmkit.GRU(x_size, h_size).parameters())
            gru_formula = 3 * h_size * (h_size + x_size) + 2 * 3 * h_size
            print(f"x={x_size:3d} h={h_size:3d}: LSTM {lstm_count:7,}  GRU {gru_count:7,} "
                  f"(formula {gru_formula:7,})  GRU/LSTM = {gru_count / lstm_count:.2f}")
            assert gru_count == gru_formula
        """
    ),
    md(
        """
        ## What to take away

        - The LSTM is six lines: three sigmoid gates, a tanh candidate, the cell $c_t = f_t c_{t-1} + i_t g_t$
          and $h_t = o_t \\tanh(c_t)$. `lstmkit`'s reference engine and `torch.nn.LSTM` compute exactly them.
        - The cell is the path along which the memory travels: from $c_{t-1}$ to $c_t$ it is only multiplied
          by $f_t$. Chapter 4 shows what that does to the gradient.
        - Parameters: $4h(h+x)$ weights per layer (plus biases); the GRU, $3h(h+x)$.

        Next: [2. Train a character-level LSTM on The Time Machine](02-charlm-time-machine.ipynb).
        """,
        """
        ## 小结

        - LSTM 就是六行公式：三个 sigmoid 门、一个 tanh 候选记忆元、记忆元 $c_t = f_t c_{t-1} + i_t g_t$，
          以及 $h_t = o_t \\tanh(c_t)$。`lstmkit` 的 reference 引擎和 `torch.nn.LSTM` 算的正是它们。
        - 记忆元是记忆流动的“传送带”：从 $c_{t-1}$ 到 $c_t$ 只乘了一个 $f_t$。第 4 节会看到这对梯度意味着什么。
        - 参数量：每层 $4h(h+x)$ 个权重（另加偏置）；GRU 是 $3h(h+x)$。

        下一节：[2. 在《时间机器》上训练字符级 LSTM](02-charlm-time-machine.ipynb)。
        """,
    ),
]
