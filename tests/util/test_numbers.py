"""Command-line numbers: values or one InputError line naming the flag, the rule and an example."""

import pytest

from tpem_seg.errors import InputError
from tpem_seg.util.numbers import parse_choices, parse_names, parse_numbers, parse_ranges


def test_numbers_of_a_given_count_and_kind():
    assert parse_numbers("5,0.99,0.99", "--spacing", 3) == (5.0, 0.99, 0.99)
    assert parse_numbers("0,1", "--channels", kind=int) == (0, 1)
    assert parse_numbers(None, "--spacing", 3) is None


@pytest.mark.parametrize("text, kwargs, message", [
    ("1,2", dict(n=3, example="5,1,1"), "--flag '1,2' must be 3 comma-separated numbers, e.g. 5,1,1"),
    ("1.5,2", dict(kind=int), "--flag '1.5,2' must be comma-separated integers"),
    ("0,1,1", dict(n=3, positive=True), "must be 3 comma-separated positive numbers"),
    ("", dict(), "must be comma-separated numbers"),
])
def test_bad_numbers_name_the_flag_and_the_rule(text, kwargs, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_numbers(text, "--flag", **kwargs)


def test_names_choices_and_ranges():
    assert parse_names(" vessel, neuron ,") == ("vessel", "neuron")
    assert parse_choices("torch,onnxruntime", "--backends", ("torch", "onnxruntime")) == ["torch", "onnxruntime"]
    with pytest.raises(InputError, match="--backends 'tensorflow': choose from torch, onnxruntime"):
        parse_choices("tensorflow", "--backends", ("torch", "onnxruntime"))
    assert parse_ranges("0:8,5:,:12", "--crop", 3) == (slice(0, 8), slice(5, None), slice(None, 12))
    with pytest.raises(InputError, match="--crop '0:8,5' must be 3 comma-separated start:stop ranges"):
        parse_ranges("0:8,5", "--crop", 3)
