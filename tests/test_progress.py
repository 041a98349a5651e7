import io

from caffessd.util.progress import Progress


def test_progress_reports_count_rate_and_eta():
    stream = io.StringIO()
    with Progress(10, "writing", stream=stream, interval=0) as bar:
        for _ in range(4):
            bar.update()
    lines = stream.getvalue().strip().splitlines()
    assert lines[0].startswith("writing: 1/10 img, ")
    assert lines[-1].startswith("writing: 4/10 img, ")
    assert "img/s" in lines[-1] and "ETA" in lines[-1]


def test_progress_disabled_and_unknown_total():
    stream = io.StringIO()
    with Progress(None, "reading", stream=stream, enabled=False) as bar:
        bar.update(3)
    assert stream.getvalue() == ""
    bar = Progress(None, "reading", stream=stream, interval=0)
    bar.update(2, extra="loss 0.5")
    text = stream.getvalue().strip()
    assert text.startswith("reading: 2 img, ") and text.endswith(", loss 0.5")
    assert "ETA" not in stream.getvalue()
