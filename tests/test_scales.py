"""harness.scales: the one parser and spelling of scales and sizes."""
from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.scales import (format_scale, parse_scale, parse_scales, parse_size, scale_label,
                            scale_number)


def _one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(HarnessError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_parse_scales_keeps_order_and_drops_duplicates():
    assert parse_scales("2,3,4") == [2.0, 3.0, 4.0]
    assert parse_scales(" 2.5 , 2.5,4,1") == [2.5, 4.0, 1.0]
    assert parse_scales("12") == [12.0]
    assert parse_scales("1.5", minimum=1.5) == [1.5]


@pytest.mark.parametrize("text,why", [
    ("", "empty"), ("  ", "empty"), (None, "empty"),
    ("2,,3", "empty item"), ("2,", "empty item"), (",2", "empty item"),
    ("a", "not a number"), ("2,x", "not a number"), ("2;3", "not a number"),
    ("nan", "not a finite number"), ("2,inf", "not a finite number"), ("-inf", "not a finite number"),
    ("0", "> 0"), ("2,-1", "> 0"),
    ("0.5", ">= 1"), ("4,0.99", ">= 1"),
])
def test_parse_scales_rejects_bad_input(text, why):
    message = _one_line_error(parse_scales, text)
    assert message.startswith("bad --scales") and why in message


def test_parse_scale_is_positive_and_finite_with_an_optional_minimum():
    assert parse_scale("3.7") == 3.7 and parse_scale("0.5") == 0.5 and parse_scale(2) == 2.0
    for text, why in (("0", "> 0"), ("-1.5", "> 0"), ("nan", "finite"), ("inf", "finite"),
                      ("abc", "not a number"), ("", "not a number"), (None, "not a number")):
        assert why in _one_line_error(parse_scale, text, "--scale")
    assert "bad --scale '0.5': scales must be >= 1" == _one_line_error(parse_scale, "0.5", "--scale", 1.0)
    assert _one_line_error(parse_scale, "x", "--zoom").startswith("bad --zoom 'x'")


def test_parse_size_reads_height_by_width():
    assert parse_size("768x1020") == (768, 1020)
    assert parse_size(" 21 X 40 ") == (21, 40)
    assert parse_size("5\u00d77") == (5, 7)
    assert parse_size("007x1") == (7, 1)


@pytest.mark.parametrize("text", ["", "768", "768by1020", "0x10", "10x0", "-1x5", "1.5x2", "10x10x10",
                                  "nanxnan", "x10", "\u0663x3", None])
def test_parse_size_rejects_bad_input(text):
    message = _one_line_error(parse_size, text)
    assert message.startswith("bad --size") and "HEIGHTxWIDTH" in message
    assert _one_line_error(parse_size, text, "--out-size").startswith("bad --out-size")


def test_format_scale_label_and_number():
    assert [format_scale(s) for s in (2, 2.0, 2.5, 3.7, 30, 1 / 3)] == \
        ["2", "2", "2.5", "3.7", "30", "0.3333333333"]
    assert [scale_label(s) for s in (2, 2.5, 12.0)] == ["x2", "x2.5", "x12"]
    assert scale_number(2.0) == 2 and type(scale_number(2.0)) is int
    assert scale_number(2.5) == 2.5 and scale_number(None) is None


def test_formatted_scales_parse_back():
    scales = [2.0, 3.0, 4.0, 6.0, 12.0, 18.0, 24.0, 30.0, 1.5, 2.5, 3.5, 3.7]
    assert parse_scales(",".join(format_scale(s) for s in scales)) == scales
