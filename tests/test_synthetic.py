"""lstmkit.synthetic: shapes, seeded reproducibility, that each task asks what it says, and each chance level
measured against its formula."""

from __future__ import annotations

import pytest
import torch

from lstmkit.synthetic import (
    DEFAULT_LENGTHS,
    SOLVED_FRACTION,
    TASKS,
    AddingProblem,
    CopyTask,
    DigitsTask,
    OrderTask,
    PermutedDigitsTask,
    Recipe,
    TemporalOrderTask,
    make_task,
)
from lstmkit.synthetic import digits as digits_module
from lstmkit.synthetic.temporal_order import SYMBOLS

needs_sklearn = pytest.mark.skipif(not digits_module.sklearn_available(),
                                   reason="the digits tasks need scikit-learn (pip install scikit-learn)")
# Each task at a length it accepts (the digits are 64 pixels); the digits need scikit-learn.
ALL = [pytest.param(name, marks=needs_sklearn) if name.startswith("digits") else name for name in TASKS]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def length_for(name: str, length: int) -> int:
    return DEFAULT_LENGTHS[name] if name.startswith("digits") else length


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_dtypes(name: str) -> None:
    task = make_task(name, length_for(name, 12))
    x, y = task.sample(5, gen(0))
    assert x.shape[0] == 5 and x.shape[2] == task.input_size
    assert task.length <= x.shape[1] <= task.seq_len  # temporal order draws its length per batch
    assert x.dtype == torch.float32
    if name == "adding":
        assert y.shape == (5, 1) and y.dtype == torch.float32
    else:
        assert y.shape == (5, task.readout) and y.dtype == torch.int64
        assert 0 <= int(y.min()) and int(y.max()) < task.output_size
    prediction = torch.zeros(5, task.readout, task.output_size)
    assert task.loss(prediction, y).dim() == 0


@pytest.mark.parametrize("name", ALL)
def test_seeds_reproduce_and_differ(name: str) -> None:
    task = make_task(name, length_for(name, 20))
    x1, y1 = task.sample(8, gen(3))
    x2, y2 = task.sample(8, gen(3))
    x3, y3 = task.sample(8, gen(4))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)


def test_adding_marks_two_values_one_per_half_and_adds_them() -> None:
    task = AddingProblem(30)
    x, y = task.sample(500, gen(0))
    values, marks = x[..., 0], x[..., 1]
    assert float(values.min()) >= 0 and float(values.max()) <= 1
    assert torch.equal(marks.sum(1), torch.full((500,), 2.0))
    assert torch.equal(marks[:, :15].sum(1), torch.ones(500))  # one mark in each half: a gap of ~T/2
    assert torch.allclose((values * marks).sum(1, keepdim=True), y)


def test_adding_chance_level_is_one_sixth() -> None:
    task = AddingProblem(10)
    _, y = task.sample(200_000, gen(1))
    # The best constant is the mean, 1; its MSE is Var[u1 + u2] = 1/6 (standard error here ~0.0003).
    assert float(y.mean()) == pytest.approx(1.0, abs=0.005)
    mean_predictor = torch.ones(200_000, 1, 1)
    assert task.metric(mean_predictor, y) == pytest.approx(1 / 6, abs=0.002)
    assert task.baseline == 1 / 6
    # Any other constant is worse: the mean is the memoryless optimum.
    assert task.metric(mean_predictor * 0.9, y) > task.metric(mean_predictor, y)


def test_copy_layout_and_chance_level() -> None:
    task = CopyTask(7, symbols=4, alphabet=5, loss_span="recall")
    x, y = task.sample(20_000, gen(2))
    codes = x.argmax(-1)
    assert torch.equal(x.sum(-1), torch.ones(20_000, task.seq_len))  # one-hot
    assert task.seq_len == 7 + 2 * 4 and task.readout == 4
    assert torch.equal(codes[:, :4], y)  # the symbols first ...
    assert bool((codes[:, 4:11] == task.blank).all())  # ... then the delay of T blanks ...
    assert bool((codes[:, 11] == task.delimiter).all())  # ... then "recall now" at the first read-out step
    assert bool((codes[:, 12:] == task.blank).all())
    # Memoryless: the best guess is the most frequent symbol, wrong 1 - 1/alphabet of the time.
    majority = torch.bincount(y.flatten(), minlength=5).argmax()
    guess = torch.nn.functional.one_hot(torch.full_like(y, int(majority)), 5).float()
    assert task.metric(guess, y) == pytest.approx(1 - 1 / 5, abs=0.01)
    assert task.baseline == pytest.approx(0.8)


def test_copy_over_the_whole_sequence_asks_blank_then_the_symbols_and_scores_only_the_recall() -> None:
    recall = CopyTask(7, symbols=4, alphabet=5, loss_span="recall")
    task = CopyTask(7, symbols=4, alphabet=5)  # the default span: the whole sequence, as published
    assert task.loss_span == "sequence"
    x, y = task.sample(3_000, gen(2))
    x_recall, y_recall = recall.sample(3_000, gen(2))
    assert torch.equal(x, x_recall)  # the same inputs from the same seed
    assert y.shape == (3_000, task.seq_len) and task.readout == task.seq_len and task.output_size == 6
    assert bool((y[:, :-4] == task.blank).all()) and torch.equal(y[:, -4:], y_recall)
    assert task.baseline == recall.baseline == pytest.approx(0.8)  # only the recalled symbols are scored
    # Answering blank everywhere but the recall, where it guesses: every blank right, yet chance-level error.
    guess = torch.nn.functional.one_hot(y.clone(), 6).float()
    guess[:, -4:] = torch.nn.functional.one_hot(torch.zeros(3_000, 4, dtype=torch.int64), 6).float()
    assert task.metric(guess, y) == pytest.approx(0.8, abs=0.02)
    perfect = torch.nn.functional.one_hot(y, 6).float()
    assert task.metric(perfect, y) == 0.0
    # The loss counts every step: a model that gets the recall right but the blanks wrong pays for it.
    wrong_blanks = perfect.clone()
    wrong_blanks[:, :-4] = torch.nn.functional.one_hot(torch.zeros(3_000, task.seq_len - 4, dtype=torch.int64),
                                                       6).float()
    assert task.metric(wrong_blanks, y) == 0.0 and task.loss(wrong_blanks, y) > task.loss(perfect, y)
    with pytest.raises(ValueError, match="loss_span must be one of"):
        CopyTask(7, loss_span="all")


def test_each_task_declares_its_training_recipe() -> None:
    copy = CopyTask(100)
    assert (copy.recipe.optimizer, copy.recipe.lr, copy.recipe.batch_size, copy.recipe.clip) == ("rmsprop", 1e-3,
                                                                                                  32, 0.0)
    assert copy.chrono_max == 150  # Tallec & Ollivier's T_max = 3T/2
    assert AddingProblem(100).chrono_max == 100 and AddingProblem(100).recipe == Recipe()  # its sequence length
    with pytest.raises(ValueError, match="optimizer must be one of"):
        Recipe(optimizer="lbfgs")
    with pytest.raises(ValueError, match="chrono_scale"):
        Recipe(chrono_scale=0.0)


def test_order_label_is_the_first_symbol_and_nothing_else_tells() -> None:
    task = OrderTask(9, classes=3, distractors=6)
    x, y = task.sample(30_000, gen(3))
    codes = x.argmax(-1)
    assert torch.equal(codes[:, 0:1], y)
    assert bool((codes[:, 1:-1] < 9).all())  # fillers in between, from keys and distractors alike
    assert bool((codes[:, 1:-1] < 3).any()) and bool((codes[:, 1:-1] >= 3).any())
    assert bool((codes[:, -1] == task.query).all())
    # A predictor that sees every step but the first can do no better than chance: the best map from the
    # last distractor to a class, fitted on these very samples, is still wrong ~2/3 of the time.
    counts = torch.zeros(9, 3)
    counts.index_put_((codes[:, -2], y[:, 0]), torch.ones(30_000), accumulate=True)
    best = counts.argmax(1)[codes[:, -2]]
    prediction = torch.nn.functional.one_hot(best, 3).float().unsqueeze(1)
    assert task.metric(prediction, y) == pytest.approx(1 - 1 / 3, abs=0.015)
    assert task.baseline == pytest.approx(2 / 3)
    # ... while reading the first step answers perfectly.
    oracle = torch.nn.functional.one_hot(codes[:, 0], 3).float().unsqueeze(1)
    assert task.metric(oracle, y) == 0.0


@pytest.mark.parametrize("name", ALL)
def test_solved_threshold_is_a_fraction_of_the_baseline(name: str) -> None:
    task = make_task(name, length_for(name, 10))
    assert task.threshold == pytest.approx(SOLVED_FRACTION * task.baseline)
    assert task.solved(task.threshold) and not task.solved(task.threshold * 1.01)
    assert not task.solved(task.baseline)


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match="length must be an int >= 2"):
        AddingProblem(1)
    with pytest.raises(ValueError, match="length must be an int >= 1"):
        CopyTask(0)
    with pytest.raises(TypeError, match="length must be an int"):
        OrderTask(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alphabet"):
        CopyTask(5, alphabet=1)
    with pytest.raises(ValueError, match="classes"):
        OrderTask(5, classes=1)
    with pytest.raises(ValueError, match="task must be one of"):
        make_task("parity", 10)
    with pytest.raises(ValueError, match="batch_size"):
        AddingProblem(10).sample(0)


def test_temporal_order_is_experiment_6a_as_published() -> None:
    task = TemporalOrderTask(100)
    E, B, X, Y = (SYMBOLS.index(c) for c in "EBXY")
    lengths = set()
    for seed in range(40):
        x, y = task.sample(64, gen(seed))
        codes = x.argmax(-1)  # (B, L)
        L = codes.size(1)
        lengths.add(L)
        assert 100 <= L <= 110
        assert bool((codes[:, 0] == E).all()) and bool((codes[:, -1] == B).all())
        relevant = (codes == X) | (codes == Y)
        assert bool((relevant.sum(1) == 2).all())  # exactly two relevant symbols; the distractors are a-d
        assert bool((codes[:, 1:-1][~relevant[:, 1:-1]] < 4).all())
        position = relevant.nonzero()[:, 1].view(-1, 2) + 1  # 1-based positions t1 < t2
        assert bool(((position[:, 0] >= 10) & (position[:, 0] <= 20)).all())
        assert bool(((position[:, 1] >= 50) & (position[:, 1] <= 60)).all())
        first = codes.gather(1, position[:, :1] - 1)[:, 0] == Y
        second = codes.gather(1, position[:, 1:] - 1)[:, 0] == Y
        assert torch.equal(y[:, 0], 2 * first.long() + second.long())  # XX=Q, XY=R, YX=S, YY=U
    assert len(lengths) > 5  # lengths vary from batch to batch
    assert task.baseline == pytest.approx(3 / 4)


def test_temporal_order_at_its_shortest_keeps_e_first() -> None:
    x, _ = TemporalOrderTask(10).sample(500, gen(7))
    codes = x.argmax(-1)
    assert bool((codes[:, 0] == SYMBOLS.index("E")).all()) and bool((codes[:, -1] == SYMBOLS.index("B")).all())
    assert bool((((codes == SYMBOLS.index("X")) | (codes == SYMBOLS.index("Y"))).sum(1) == 2).all())


def test_temporal_order_needs_both_symbols() -> None:
    # Knowing one relevant symbol leaves the class to chance between two: error 1/2, not 0.
    task = TemporalOrderTask(50)
    x, y = task.sample(20_000, gen(5))
    assert float((y[:, 0] // 2 == 0).float().mean()) == pytest.approx(0.5, abs=0.02)
    assert torch.bincount(y[:, 0], minlength=4).min() > 4_500


@needs_sklearn
def test_digits_split_permutation_and_pixels() -> None:
    plain, permuted = DigitsTask(), PermutedDigitsTask()
    x_test, y_test = plain.validation_set(10)
    assert x_test.shape == (359, 64, 1) and y_test.shape == (359, 1)  # the held-out 20%, whatever size is asked
    x_train, _ = digits_module._load()[:2]
    assert x_train.size(0) == 1797 - 359
    assert float(x_test.min()) >= 0 and float(x_test.max()) <= 1
    xp, yp = permuted.validation_set(10)
    order = digits_module.permutation()
    assert torch.equal(torch.sort(order).values, torch.arange(64))
    assert torch.equal(xp[..., 0], x_test[..., 0][:, order]) and torch.equal(yp, y_test)
    assert torch.equal(order, digits_module.permutation())  # fixed: the same order every call
    assert not torch.equal(order, torch.arange(64))
    x, y = plain.sample(32, gen(0))
    assert x.shape == (32, 64, 1) and int(y.max()) < 10
    with pytest.raises(ValueError, match="length must be 64"):
        DigitsTask(100)


def test_bilinear_upsampling_matches_torch_and_a_case_by_hand() -> None:
    images = torch.rand(4, 8, 8, generator=gen(7), dtype=torch.float64)
    expected = torch.nn.functional.interpolate(images[:, None], size=(28, 28), mode="bilinear",
                                               align_corners=False)[:, 0]
    torch.testing.assert_close(digits_module.upsample(images, 28), expected)
    # By hand, 2 -> 4 pixels: outputs at input coordinates -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
    row = digits_module.upsample(torch.tensor([[[0.0, 4.0], [0.0, 4.0]]]), 4)[0, 0]
    torch.testing.assert_close(row, torch.tensor([0.0, 1.0, 3.0, 4.0]))
    # Each row of the interpolation matrix is a convex combination of at most two neighbours.
    a = digits_module.interpolation_matrix(8, 28)
    torch.testing.assert_close(a.sum(1), torch.ones(28, dtype=torch.float64))
    assert int((a > 0).sum(1).max()) <= 2 and float(a.min()) >= 0


@needs_sklearn
def test_digits_long_is_784_steps_of_the_upsampled_images_and_its_permutation_is_fixed() -> None:
    plain, permuted = make_task("digits-long", 784), make_task("digits-long-permuted", 784)
    x, y = plain.validation_set(1)
    assert x.shape == (359, 784, 1) and y.shape == (359, 1)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    small, small_y = DigitsTask().validation_set(1)
    assert torch.equal(small_y, y)  # the same held-out images, in the same order
    up = digits_module.upsample(small[..., 0].double().view(-1, 8, 8), 28).clamp(0, 1).float()
    torch.testing.assert_close(x[..., 0], up.reshape(-1, 784))
    order = digits_module.permutation(784)
    assert torch.equal(order, digits_module.permutation(784))  # seeded: the same every call
    assert torch.equal(torch.sort(order).values, torch.arange(784)) and not torch.equal(order, torch.arange(784))
    xp, yp = permuted.validation_set(1)
    assert torch.equal(xp[..., 0], x[..., 0][:, order]) and torch.equal(yp, y)
    xs, ys = permuted.sample(6, gen(0))
    assert xs.shape == (6, 784, 1) and ys.shape == (6, 1)
    with pytest.raises(ValueError, match="length must be 784"):
        make_task("digits-long", 64)


@needs_sklearn
def test_validation_split_is_held_out_of_training_and_apart_from_test() -> None:
    x_train, _, x_val, _ = digits_module._load(8, "validation")
    x_full, _, x_test, _ = digits_module._load(8, "test")
    assert x_val.size(0) == 288 and x_train.size(0) == 1438 - 288
    rows = {tuple(r.tolist()) for r in x_full}
    assert all(tuple(r.tolist()) in rows for r in x_val)  # validation images come from the training part
    test_rows = {tuple(r.tolist()) for r in x_test}
    train_rows = {tuple(r.tolist()) for r in x_train}
    assert not any(tuple(r.tolist()) in train_rows | test_rows for r in x_val)  # and from neither of the others
    assert DigitsTask(split="validation").validation_set(1)[0].shape == (288, 64, 1)
    with pytest.raises(ValueError, match="split must be one of"):
        DigitsTask(split="train")


def test_order_ablation_knobs_move_the_key_and_remove_keys_from_the_fillers() -> None:
    task = OrderTask(10, classes=3, distractors=5, key_position=4, keys_in_fillers=False)
    x, y = task.sample(2_000, gen(6))
    codes = x.argmax(-1)
    assert x.shape[1] == task.seq_len == 12
    assert torch.equal(codes[:, 4:5], y)  # the key after 4 fillers
    fillers = torch.cat([codes[:, :4], codes[:, 5:-1]], dim=1)
    assert bool((fillers >= 3).all()) and bool((fillers < 8).all())  # distractors only
    # the defaults are the original task, draw for draw
    a, b = OrderTask(10).sample(8, gen(1)), OrderTask(10, key_position=0, keys_in_fillers=True).sample(8, gen(1))
    assert torch.equal(a[0], b[0])
    with pytest.raises(ValueError, match="key_position"):
        OrderTask(5, key_position=6)
