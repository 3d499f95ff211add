"""The long-range lab: the model, the training loop's verdicts, gradient flow, sweep outputs and the CLI."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace

import pytest
import torch

from lstmkit.apps import longrange
from lstmkit.apps.longrange import LongRangeConfig, build_model, gradient_flow, sweep, sweep_table, train
from lstmkit.cli import main
from lstmkit.synthetic import make_task

SMALL = {"hidden_size": 32, "eval_size": 128}


@pytest.mark.parametrize("task", ["adding", "copy", "order", "temporal-order"])
@pytest.mark.parametrize("model", ["lstm", "gru", "rnn"])
def test_model_predicts_one_output_per_readout_step(task: str, model: str) -> None:
    length = 10 if task == "temporal-order" else 6  # its shortest: windows at T/10 ... 3T/5
    config = LongRangeConfig(task=task, length=length, model=model, **SMALL)
    t = make_task(task, length)
    x, _ = t.sample(3)
    assert build_model(config, t)(x).shape == (3, t.readout, t.output_size)


def test_lstm_forget_bias_starts_at_the_configured_value() -> None:
    model = build_model(LongRangeConfig(init="forget1", forget_bias=1.0, **SMALL))
    H = 32
    total = model.rnn.bias_ih_l0[H:2 * H] + model.rnn.bias_hh_l0[H:2 * H]
    assert torch.allclose(total, torch.ones(H))
    other = model.rnn.bias_ih_l0[:H] + model.rnn.bias_hh_l0[:H]  # the input gate keeps torch.nn's init
    assert not torch.allclose(other, torch.ones(H))


def test_same_seed_same_model() -> None:
    a, b = build_model(LongRangeConfig(seed=5, **SMALL)), build_model(LongRangeConfig(seed=5, **SMALL))
    c = build_model(LongRangeConfig(seed=6, **SMALL))
    assert torch.equal(a.rnn.weight_hh_l0, b.rnn.weight_hh_l0)
    assert not torch.equal(a.rnn.weight_hh_l0, c.rnn.weight_hh_l0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "parity"}, "task must be one of"),
        ({"model": "transformer"}, "model must be one of"),
        ({"length": 1}, "length must be an int >= 2"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"clip": -1.0}, "clip must be"),
        ({"steps": -1}, "steps must be an int >= 0"),
        ({"engine": "cudnn"}, "engine must be one of"),
        ({"variants": {"return_gates": True}}, "no argument 'return_gates'"),
    ],
)
def test_config_rejects_bad_values_by_name(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LongRangeConfig(**changes)


def test_variants_are_lstm_only() -> None:
    assert set(longrange.lstm_variant_options()) == set(longrange.VARIANT_NAMES)  # this LSTM takes them all
    with pytest.raises(ValueError, match="variants"):
        LongRangeConfig(model="gru", variants={"peephole": True})


def test_short_lstm_run_on_an_easy_setting_is_solved() -> None:
    config = LongRangeConfig(task="order", length=5, steps=300, eval_every=20, **SMALL)
    result = train(config)
    assert result.solved and result.steps_to_solve is not None
    assert result.final_metric <= result.threshold == pytest.approx(0.01 * 0.75)
    assert result.steps == result.steps_to_solve < 300  # stopped at the validation that solved it
    assert result.history[0][0] == 0 and result.history[0][1] > 0.5  # it started at chance level


def test_short_rnn_run_on_a_long_gap_is_not_solved() -> None:
    config = LongRangeConfig(task="adding", length=100, model="rnn", steps=60, eval_every=20, **SMALL)
    result = train(config)
    assert not result.solved and result.steps_to_solve is None
    assert result.steps == 60
    assert result.final_metric > 0.5 * result.baseline  # no better than about the chance level
    assert [s for s, _ in result.history] == [0, 20, 40, 60]


def test_gradient_flow_is_the_total_derivative_and_vanishes_faster_in_the_rnn() -> None:
    config = LongRangeConfig(task="adding", length=40, **SMALL)
    flows = gradient_flow(config, models=("rnn", "lstm"), batch_size=16)
    assert set(flows) == {"rnn", "lstm"} and all(len(v) == 40 for v in flows.values())
    # Independently: dL/dh_0 through torch's fused kernel over steps 1..T-1, h_0 fed in as the initial state.
    task = config.make_task()
    x, y = task.sample(16, torch.Generator().manual_seed(longrange._seeds(config.seed)[2]))
    x, y = x.double(), y.double()  # gradient_flow measures in float64
    model = build_model(replace(config, model="rnn"), task).double()
    _, h0 = model.rnn(x[:, :1])
    h0.retain_grad()
    out, _ = model.rnn(x[:, 1:], h0)
    task.loss(model.head(out[:, -1:]), y).backward()
    assert flows["rnn"][0] == pytest.approx(float(h0.grad[-1].norm(dim=-1).mean()), rel=1e-4)
    # The claim of the lab: at initialisation the LSTM (forget bias 1) passes far more gradient back 39 steps.
    assert flows["lstm"][0] / flows["lstm"][-1] > 100 * flows["rnn"][0] / flows["rnn"][-1]


def test_sweep_table_and_plot(tmp_path) -> None:
    config = LongRangeConfig(task="order", steps=2, eval_every=1, **SMALL)
    results = sweep(config, [3, 4], ["rnn", "lstm"])
    assert [(r.length, r.model) for r in results] == [(3, "rnn"), (3, "lstm"), (4, "rnn"), (4, "lstm")]
    table = sweep_table(results)
    assert "| T | rnn | lstm |" in table and "\n| 3 | " in table and "\n| 4 | " in table
    longrange.plot_sweep(results, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="models must be among"):
        sweep(config, [3], ["lstm", "mamba"])


def test_cli_prints_one_json_object_with_the_contract_keys(capsys) -> None:
    code = main(["longrange", "--task", "order", "--length", "3", "--model", "gru", "--steps", "4",
                 "--eval-every", "2", "--seed", "1", "--hidden-size", "16", "--json"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    result = json.loads(out)
    assert {"task", "model", "length", "final_metric", "baseline", "solved", "steps_to_solve",
            "seconds"} <= set(result)
    assert (result["task"], result["model"], result["length"]) == ("order", "gru", 3)
    assert result["baseline"] == pytest.approx(0.75)
    assert isinstance(result["final_metric"], float) and isinstance(result["solved"], bool)
    assert result["steps_to_solve"] is None or result["steps_to_solve"] in (2, 4)
    assert result["seconds"] >= 0


def test_cli_sweep_and_gradient_plot_write_files(tmp_path, capsys) -> None:
    table, plot, grads = tmp_path / "t.md", tmp_path / "s.png", tmp_path / "g.png"
    code = main(["longrange", "sweep", "--task", "copy", "--lengths", "2,3", "--models", "lstm", "--steps", "2",
                 "--hidden-size", "16", "--length", "5", "--table", str(table), "--plot", str(plot),
                 "--plot-gradients", str(grads)])
    assert code == 0
    assert "| 2 | " in table.read_text() and "| 3 | " in capsys.readouterr().out
    for png in (plot, grads):
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "s.png", "t.md"]  # no temporary left over


@pytest.mark.parametrize(
    "argv",
    [
        ["--length", "0"],
        ["--model", "lstx"],
        ["--task", "parity"],
        ["--lr", "-1"],
        ["--steps", "ten"],
        ["--lengths", "10,20"],
        ["--engine", "cudnn"],
        ["--task", "adding", "--length", "1"],
        ["sweep", "--lengths", "10,x"],
        ["sweep", "--models", "lstm,mamba"],
        ["--device", "tpu9"],
        ["--zoneout", "2"],
        ["--peephole", "--engine", "native"],
        ["--init", "orthogonal"],
        ["--chrono-max", "1"],
        ["--init", "torch", "--chrono-max", "10"],
        ["--cell", "no_c", "--engine", "native"],
        ["--cell", "no_c", "--peephole"],
        ["report"],
        ["--out", "somewhere"],
        ["--quick"],
        ["--task", "digits", "--length", "100"],
        ["--task", "copy", "--split", "validation"],
        ["--optimizer", "lbfgs"],
        ["sweep", "--log", "x.tsv"],
        ["--max-cpu-minutes", "-1"],
    ],
)
def test_cli_bad_values_exit_2_with_one_line(argv: list[str], capsys) -> None:
    extra = [] if "--steps" in argv else ["--steps", "1", "--json"]  # a check that failed would train briefly
    try:
        code = main(["longrange", *argv, *extra])
    except SystemExit as exit:
        code = exit.code
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err and captured.err.strip()


def test_cli_variant_flag_needs_the_lstm(capsys) -> None:
    options = longrange.lstm_variant_options()
    bools = [n for n, p in options.items() if isinstance(p.default, bool)]
    assert "peephole" in bools
    flag = "--" + bools[0].replace("_", "-")
    assert main(["longrange", "--model", "rnn", flag, "--steps", "1", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "need --model lstm" in err


def test_cli_variant_flags_reach_the_lstm(capsys) -> None:
    options = longrange.lstm_variant_options()
    bools = [n for n, p in options.items() if isinstance(p.default, bool)]
    assert "peephole" in bools
    name = bools[0]
    code = main(["longrange", "--task", "order", "--length", "3", "--steps", "2", "--eval-every", "1",
                 "--hidden-size", "8", "--" + name.replace("_", "-"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["variants"] == {name: True}
    model = build_model(LongRangeConfig(task="order", length=3, variants={name: True}, **SMALL))
    assert f"{name}=True" in repr(model.rnn)


def test_init_reaches_the_lstm_and_chrono_max_defaults_to_the_task_s() -> None:
    config = LongRangeConfig(task="adding", length=20, **SMALL)  # the default init, chrono
    assert config.init == "chrono"
    model = build_model(config)
    assert model.rnn.init == "chrono" and model.rnn.chrono_max == config.make_task().seq_len == 20
    H = 32
    b = (model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0).detach().view(4, H)
    assert torch.equal(b[0], -b[1]) and float(b[1].max()) <= torch.log(torch.tensor(19.0)) + 1e-6
    # copy: Tallec & Ollivier's T_max = 3T/2 over the delay T, not the sequence length T + 20
    assert build_model(LongRangeConfig(task="copy", length=20, **SMALL)).rnn.chrono_max == 30
    assert build_model(LongRangeConfig(init="chrono", chrono_max=7, **SMALL)).rnn.chrono_max == 7
    zeros = build_model(LongRangeConfig(init="zeros", **SMALL)).rnn
    assert float(zeros.bias_ih_l0.detach().abs().sum() + zeros.bias_hh_l0.detach().abs().sum()) == 0
    torch_init = build_model(LongRangeConfig(init="torch", **SMALL)).rnn
    assert torch_init.init == "torch" and float(torch_init.bias_ih_l0.detach().abs().min()) > 0
    assert build_model(LongRangeConfig(model="gru", **SMALL)).rnn.__class__.__name__ == "GRU"  # no init there
    with pytest.raises(ValueError, match="chrono_max is for init='chrono'"):
        LongRangeConfig(init="zeros", chrono_max=5)
    with pytest.raises(ValueError, match="init must be one of"):
        LongRangeConfig(init="xavier")


def test_unset_training_settings_are_the_task_s_recipe_and_flags_override_them(capsys) -> None:
    copy = LongRangeConfig(task="copy")
    assert (copy.optimizer, copy.lr, copy.weight_decay, copy.batch_size, copy.clip, copy.steps) == (
        "rmsprop", 1e-3, 0.0, 32, 0.0, 60_000)
    adding = LongRangeConfig()
    assert (adding.optimizer, adding.lr, adding.batch_size, adding.clip, adding.steps) == ("adamw", 3e-3, 64, 1.0,
                                                                                           10_000)
    # digits-long: each model its own lr, the best of a validation sweep
    assert [LongRangeConfig(task="digits-long", model=m).lr for m in ("lstm", "gru", "rnn")] == [1e-2, 3e-3, 1e-3]
    mine = LongRangeConfig(task="copy", lr=5e-4, batch_size=8, optimizer="adamw")
    assert (mine.lr, mine.batch_size, mine.optimizer, mine.clip) == (5e-4, 8, "adamw", 0.0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        LongRangeConfig(optimizer="lbfgs")
    # The loop gets the recipe's optimizer: RMSprop for copy, AdamW for the others.
    seen = []

    class Spy(longrange.Callback):
        def on_train_begin(self, trainer) -> None:
            seen.append((type(trainer.optimizer).__name__, trainer.config.clip, trainer.config.weight_decay))

    original = longrange.Trainer.__init__

    def init(self, *args, callbacks=(), **kwargs):
        original(self, *args, callbacks=[*callbacks, Spy()], **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(longrange.Trainer, "__init__", init)
        train(LongRangeConfig(task="copy", length=3, steps=1, **SMALL))
        train(LongRangeConfig(task="adding", length=3, steps=1, **SMALL))
    assert seen == [("RMSprop", 0.0, 0.0), ("AdamW", 1.0, 0.01)]


def test_rerun_command_trains_the_same_config() -> None:
    from lstmkit.apps import longrange_report
    from lstmkit.cli import build_parser
    from lstmkit.cli.longrange import _config

    configs = [r.config for r in longrange_report.plan(seeds=2, quick=True, budget_cpu_minutes=3)]
    configs.append(LongRangeConfig(task="digits", model="gru", lr=0.01, steps=7, init="forget1", forget_bias=2.0,
                                   task_options={"split": "validation"}, seed=4))
    configs.append(LongRangeConfig(task="copy", length=30, variants={"peephole": True}, stop_when_solved=False))
    for config in configs:
        command = longrange.rerun_command(config)
        assert command.startswith("lstmkit longrange --task ")
        args = build_parser().parse_args(command.split()[1:])
        rebuilt = _config(args, args.model)
        assert rebuilt.max_cpu_seconds == pytest.approx(config.max_cpu_seconds, rel=1e-5)
        assert replace(rebuilt, eval_size=config.eval_size, max_cpu_seconds=config.max_cpu_seconds) == config, command


def test_for_model_moves_a_recipe_lr_to_the_model_s_own() -> None:
    from lstmkit.synthetic import TASKS, Recipe

    recipe = Recipe(lr=1e-3, lr_by_model={"rnn": 1e-4})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TASKS["order"], "recipe", recipe)
        lstm = LongRangeConfig(task="order", variants={"peephole": True})
        assert lstm.lr == 1e-3
        rnn = longrange.for_model(lstm, "rnn")
        assert rnn.lr == 1e-4 and rnn.variants == {}
        assert longrange.for_model(LongRangeConfig(task="order", lr=0.5), "rnn").lr == 0.5  # a given lr stays


def test_cli_log_writes_the_learning_curve_as_it_goes_and_nothing_else(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the run keeps no directory, not even a temporary one
    log = tmp_path / "curve.tsv"
    assert main(["longrange", "--task", "order", "--length", "3", "--steps", "4", "--eval-every", "2",
                 "--hidden-size", "8", "--keep-training", "--log", str(log), "--plot", "curve.png", "--json"]) == 0
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    result = json.loads(capsys.readouterr().out)
    assert [int(r[0]) for r in rows] == [h[0] for h in result["history"]] == [0, 2, 4]
    assert [float(r[1]) for r in rows] == pytest.approx([h[1] for h in result["history"]], rel=1e-5)
    assert all(float(r[2]) >= 0 for r in rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.png", "curve.tsv"]  # and the curve's plot
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_default_length_is_the_task_s() -> None:
    assert LongRangeConfig(task="temporal-order").length == 100
    assert LongRangeConfig(task="digits").length == 64
    assert LongRangeConfig(task="digits-long").length == LongRangeConfig(task="digits-long-permuted").length == 784


def test_no_c_cell_computes_its_equations_and_is_selectable_in_the_lab() -> None:
    import lstmkit

    torch.manual_seed(0)
    lstm = lstmkit.LSTM(3, 4, cell="no_c").double()
    assert lstm.engine == "reference"
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    y, (h_n, c_n) = lstm(x)
    # by hand: c_t = f*h_{t-1} + i*g, h_t = o*tanh(c_t); c_{t-1} is never read
    h = torch.zeros(2, 4, dtype=torch.float64)
    for t in range(5):
        gates = x[t] @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + h @ lstm.weight_hh_l0.T + lstm.bias_hh_l0
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * h + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        torch.testing.assert_close(y[t], h)
    torch.testing.assert_close(h_n[0], h)
    torch.testing.assert_close(c_n[0], c)
    # a c_0 passed in changes nothing: there is no memory cell to read it
    y2, _ = lstm(x, (torch.zeros(1, 2, 4, dtype=torch.float64), torch.randn(1, 2, 4, dtype=torch.float64)))
    torch.testing.assert_close(y, y2)
    assert torch.autograd.gradcheck(lambda inp: lstm(inp)[0], (x[:3].clone().requires_grad_(),))
    with pytest.raises(ValueError, match="no_c"):
        lstmkit.LSTM(3, 4, cell="no_c", engine="fused")
    model = build_model(LongRangeConfig(variants={"cell": "no_c"}, **SMALL))
    assert model.rnn.variants.cell == "no_c"


def test_report_quick_writes_table_results_plots_and_resumes(tmp_path, capsys, monkeypatch) -> None:
    from lstmkit.apps import longrange_report

    runs = longrange_report.plan(seeds=1, quick=True, budget_cpu_minutes=0.01)
    assert {r.section for r in runs} == {"main", "init", "no_c"}
    assert len({r.key for r in runs}) == len(runs)
    trained = []
    monkeypatch.setattr(longrange_report, "train", lambda config: trained.append(config) or train(config))
    out = tmp_path / "report"
    assert main(["longrange", "report", "--out", str(out), "--quick", "--seeds", "1",
                 "--budget-cpu-minutes", "0.01"]) == 0
    # The init ablation's chrono column and the no-C ablation's lstm column are the main LSTM's runs: shown, not
    # trained again (two ablation tasks, one seed).
    assert len(trained) == len(runs) - 4 == len({json.dumps(c.to_dict(), sort_keys=True) for c in trained})
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    reused = [row for row in rows if "same_as" in row]
    assert sorted(row["label"] for row in reused) == ["chrono", "chrono", "lstm", "lstm"]
    assert all(row["same_as"].startswith("main|") and row["config"]["init"] == "chrono" for row in reused)
    table = (out / "table.md").read_text()
    assert "| adding | 20 |" in table and "| zeros | torch | forget1 | chrono |" in table and "no_c" in table
    assert "| digits-long | 784 |" in table
    assert "(not run yet)" not in table
    # every cell carries the command that reruns it
    assert "`lstmkit longrange --task adding --length 20 --model lstm --hidden-size 32 --steps 400 --eval-every 20" \
           in table and table.count("`lstmkit longrange") == len({(r.section, r.config.task, r.label) for r in runs})
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(runs)
    assert {json.loads(line)["key"] for line in lines} == {r.key for r in runs}
    assert (out / "main_adding_T20.png").read_bytes()[:4] == b"\x89PNG"
    # a report killed while writing its last run: the second call runs only that one again
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])  # cut short by the kill
    assert main(["longrange", "report", "--out", str(out), "--quick", "--seeds", "1",
                 "--budget-cpu-minutes", "0.01"]) == 0
    again = (out / "results.jsonl").read_text().splitlines()
    assert again[:-1] == lines[:-1] and json.loads(again[-1])["key"] == json.loads(lines[-1])["key"]
    assert len(again) == len(runs) and {json.loads(line)["key"] for line in again} == {r.key for r in runs}


def test_a_diverging_lab_run_stops_with_one_line_and_a_non_zero_exit(capsys) -> None:
    """The shared trainer's divergence check reaches the lab: exit 1 and one line, not a 'not solved' verdict."""
    code = main(["longrange", "--task", "adding", "--length", "5", "--model", "lstm", "--steps", "20",
                 "--eval-every", "5", "--hidden-size", "8", "--lr", "1e30", "--clip", "0", "--json"])
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "diverged" in lines[0] and "Traceback" not in err, err


@pytest.mark.slow
def test_report_killed_with_sigkill_continues_where_it_stopped(tmp_path) -> None:
    """A real kill -9 in the middle of the report: the second start runs only what the first did not finish."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from lstmkit.apps import longrange_report

    out = tmp_path / "report"
    results = out / "results.jsonl"
    argv = [sys.executable, "-c", "import sys; from lstmkit.cli import main; sys.exit(main())", "longrange",
            "report", "--out", str(out), "--quick", "--seeds", "1", "--budget-cpu-minutes", "0.2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    assert first.poll() is None, first.stderr.read() if first.stderr else ""
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = results.read_text().splitlines()
    done_before = [json.loads(line)["key"] for line in before if line.endswith("}")]
    assert len(done_before) >= 3
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    after = [json.loads(line) for line in results.read_text().splitlines()]
    keys = [row["key"] for row in after]
    runs = longrange_report.plan(seeds=1, quick=True, budget_cpu_minutes=0.2)
    assert sorted(keys) == sorted(r.key for r in runs)  # every run once: none lost, none done twice
    assert keys[:len(done_before)] == done_before  # the runs finished before the kill were kept, not redone
    assert "(not run yet)" not in (out / "table.md").read_text()
