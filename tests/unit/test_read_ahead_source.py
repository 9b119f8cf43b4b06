"""The rebuild's read-ahead: pages fetched on a thread, handed over as batches of many pages, in order."""

from __future__ import annotations

import pytest

from carbon.subscriptions import ReadAheadSource


class Pages:
    """A source serving a log of ``total`` events in pages of at most the size asked."""

    def __init__(self, total: int, fail_after: int | None = None) -> None:
        self.total, self.fail_after, self.after, self.asked, self.closed = total, fail_after, 0, [], False

    def fetch(self, max_events: int, timeout_s: float) -> list[dict]:
        self.asked.append(max_events)
        if self.fail_after is not None and self.after >= self.fail_after:
            raise ConnectionError("the account service went away")
        page = [{"position": p} for p in range(self.after + 1, min(self.after + max_events, self.total) + 1)]
        self.after += len(page)
        return page

    def acknowledge(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def drain(source: ReadAheadSource, max_events: int) -> list[list[int]]:
    batches = []
    while batch := source.fetch(max_events, timeout_s=0.5):
        batches.append([e["position"] for e in batch])
    return batches


def test_batches_join_pages_in_order_up_to_the_size_asked_then_the_end() -> None:
    pages = Pages(2_350)
    source = ReadAheadSource(pages, page_size=100, pages_ahead=4)  # fewer pages ahead than a batch takes
    batches = drain(source, 1_000)
    source.close()
    assert [len(b) for b in batches] == [1_000, 1_000, 350]
    assert [p for b in batches for p in b] == list(range(1, 2_351))
    assert set(pages.asked) == {100} and pages.closed
    assert source.fetch(1_000, timeout_s=0.5) == []  # past the end: nothing more, no wait


def test_an_empty_log_gives_nothing() -> None:
    source = ReadAheadSource(Pages(0), page_size=100)
    assert source.fetch(1_000, timeout_s=0.5) == []
    source.close()


def test_a_failed_fetch_is_raised_to_the_caller_after_what_was_read() -> None:
    source = ReadAheadSource(Pages(10_000, fail_after=300), page_size=100)
    assert len(source.fetch(300, timeout_s=0.5)) == 300
    with pytest.raises(ConnectionError, match="went away"):
        source.fetch(300, timeout_s=0.5)
    source.close()


def test_closing_early_stops_the_reading_thread() -> None:
    pages = Pages(1_000_000)
    source = ReadAheadSource(pages, page_size=100, pages_ahead=2)
    assert len(source.fetch(100, timeout_s=0.5)) == 100
    source.close()
    assert not source._thread.is_alive() and pages.after < 1_000
