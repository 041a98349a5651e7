import threading
import time

import pytest

from caffessd.util.parallel import ordered_map


def test_results_in_input_order_despite_uneven_work():
    delays = [0.03, 0.0, 0.02, 0.0, 0.01, 0.0]

    def work(i):
        time.sleep(delays[i])
        return i * 10
    assert list(ordered_map(work, range(6), workers=3)) == [0, 10, 20, 30, 40, 50]


def test_bounded_lookahead():
    started = []
    lock = threading.Lock()

    def work(i):
        with lock:
            started.append(i)
        return i

    gen = ordered_map(work, range(100), workers=2, ahead=4)
    first = next(gen)
    time.sleep(0.05)
    assert first == 0
    # Only the window ahead of the consumer was submitted, not the whole input.
    assert len(started) <= 5
    gen.close()


def test_error_surfaces_at_its_item_and_inline_mode():
    def work(i):
        if i == 2:
            raise ValueError("bad item 2")
        return i
    gen = ordered_map(work, range(5), workers=2)
    assert [next(gen), next(gen)] == [0, 1]
    with pytest.raises(ValueError, match="bad item 2"):
        next(gen)
    assert list(ordered_map(lambda i: i + 1, range(3), workers=0)) == [1, 2, 3]
