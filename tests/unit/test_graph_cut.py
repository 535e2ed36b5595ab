"""Where the frozen part of a fine-tuned base can be cut (pure graph logic)."""

from pipeline.model.graph_cut import Step, latest_cut_before, single_tensor_points


def chain(n: int) -> list[Step]:
    """input(0) -> 1 -> 2 ... each step reads the previous tensor."""
    return [Step((), (0,))] + [Step((i - 1,), (i,)) for i in range(1, n)]


def test_every_point_of_a_chain_is_a_cut():
    steps = chain(5)
    assert single_tensor_points(steps, [4]) == {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}
    assert latest_cut_before(steps, [4], first_trained=3) == 2
    assert latest_cut_before(steps, [4], first_trained=1) is None  # only the input is before it


def residual() -> list[Step]:
    # 0=input; a=1 conv(input); b=2 conv(a); c=3 add(a, b); d=4 conv(c)
    return [Step((), (0,)), Step((0,), (1,)), Step((1,), (2,)), Step((1, 2), (3,)), Step((3,), (4,))]


def test_inside_a_residual_block_two_tensors_are_alive():
    points = single_tensor_points(residual(), [4])
    assert 2 not in points  # after b, both a (skip) and b are still needed
    assert points == {0: 0, 1: 1, 3: 3, 4: 4}
    # training starts at the add's consumer: cache the block output; at b: cache a
    assert latest_cut_before(residual(), [4], first_trained=4) == 3
    assert latest_cut_before(residual(), [4], first_trained=2) == 1


def test_an_extra_output_keeps_its_tensor_alive():
    steps = chain(4)
    assert single_tensor_points(steps, [3, 1]) == {0: 0, 1: 1}  # 1 is needed to the end
    assert latest_cut_before(steps, [3, 1], first_trained=3) == 1  # so the cut cannot be above it


def test_parallel_branches_have_no_cut_until_they_join():
    steps = [Step((), (0,)), Step((0,), (1,)), Step((0,), (2,)), Step((1, 2), (3,))]
    assert single_tensor_points(steps, [3]) == {0: 0, 3: 3}
    assert latest_cut_before(steps, [3], first_trained=3) is None
