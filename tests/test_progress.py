"""Progress bars: drawn with an ETA on a terminal, nothing at all elsewhere (CI keeps its plain lines)."""

import io

from effkit import progress


def test_no_bar_when_stderr_is_not_a_terminal(capsys):
    progress.enable(True)
    try:
        assert not progress.drawing()  # pytest captures stderr: not a terminal
        with progress.bar("variants", 3) as advance:
            advance(1)
        assert progress._display is None
        assert capsys.readouterr().err == ""
    finally:
        progress.enable(False)


def test_nested_bars_share_one_display_with_counts_and_eta():
    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    with progress.bar("suite quick: models", 2, console=console) as models:
        with progress.bar("digits_cnn: variants", 30, console=console) as variants:
            assert len(progress._display.tasks) == 2
            for _ in range(12):
                variants(1)
            progress._display.refresh()
        models(1)
        progress._display.refresh()
    text = screen.getvalue()
    assert "digits_cnn: variants" in text and "12/30" in text and "ETA" in text
    assert "suite quick: models" in text and "1/2" in text
    assert progress._display is None  # the display stops with its last bar


def test_an_empty_bar_is_a_no_op():
    with progress.bar("nothing", 0) as advance:
        advance(5)
    assert progress._display is None
