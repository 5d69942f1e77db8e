import pytest

from commtune.errors import CommtuneError
from commtune.units import format_bandwidth, format_size, parse_bandwidth, parse_duration, parse_size


@pytest.mark.parametrize("text,bytes_per_s", [
    ("32gbit", 4e9), ("32Gbit", 4e9), ("32Gbps", 4e9), ("32Gb/s", 4e9), ("25G", 3.125e9),
    ("400mbit", 5e7), ("4GB/s", 4e9), ("4GBps", 4e9), ("4GiB/s", 4 * 2**30), ("1.5gbit", 1.875e8),
])
def test_parse_bandwidth(text, bytes_per_s):
    assert parse_bandwidth(text) == pytest.approx(bytes_per_s)


@pytest.mark.parametrize("text", ["32gbt", "-5gbit", "0", "0gbit", "25Gb", "4GB", "", "fast", "1e3"])
def test_bad_bandwidth_is_one_line_error(text):
    with pytest.raises(CommtuneError) as exc:
        parse_bandwidth(text)
    msg = str(exc.value)
    assert "\n" not in msg and repr(text) in msg and "32gbit" in msg


@pytest.mark.parametrize("text,n", [("25MB", 25_000_000), ("64MiB", 64 * 2**20), ("1048576", 1048576),
                                    ("512KiB", 512 * 1024), ("0", 0), ("1.5GB", 1_500_000_000)])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["-1MB", "25Mb", "x", "12 apples"])
def test_bad_size(text):
    with pytest.raises(CommtuneError, match="size"):
        parse_size(text)


def test_zero_size_rejected_when_positive_required():
    with pytest.raises(CommtuneError, match="positive"):
        parse_size("0", allow_zero=False)


def test_duration_and_formatting():
    assert parse_duration("1ms") == pytest.approx(1e-3)
    assert parse_duration("250us") == pytest.approx(2.5e-4)
    assert format_bandwidth(4e9) == "32 Gbit/s"
    assert format_size(25 * 2**20) == "25 MiB"
