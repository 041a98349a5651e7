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


def test_closing_early_never_waits_for_a_running_item():
    """A generator closed mid-way (an error in the consumer, or the garbage
    collector finalising an abandoned one while its thread holds locks) must
    not join its workers: one may be busy for a long time, or need a lock that
    the closing thread holds."""
    release = threading.Event()

    def work(i):
        if i == 1:
            release.wait(10)       # stands for a worker that cannot finish yet
        return i

    gen = ordered_map(work, range(4), workers=2)
    assert next(gen) == 0
    time.sleep(0.05)               # item 1 is running now
    start = time.perf_counter()
    gen.close()
    waited = time.perf_counter() - start
    release.set()
    assert waited < 1.0, f"close() waited {waited:.1f} s for a running worker"
    # Run to its end, the pool's threads are joined: none is left behind.
    before = threading.active_count()
    assert list(ordered_map(lambda i: i, range(20), workers=3)) == list(range(20))
    assert threading.active_count() <= before
