"""Behaviour of ``asgiref.current_thread_executor.CurrentThreadExecutor``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import pytest

from asgiref.current_thread_executor import CurrentThreadExecutor


def finished_future() -> Future[None]:
    done: Future[None] = Future()
    done.set_result(None)
    return done


def serve_until_done(executor: CurrentThreadExecutor, work: Future[Any]) -> None:
    """Run the work queued on ``executor`` in this thread until ``work`` is done."""
    done: Future[None] = Future()
    work.add_done_callback(lambda _: done.set_result(None))
    executor.run_until_future(done)


def test_is_a_concurrent_futures_executor() -> None:
    assert isinstance(CurrentThreadExecutor(None), Executor)


def test_old_executor_is_the_only_constructor_parameter() -> None:
    executor = CurrentThreadExecutor(old_executor=None)
    assert isinstance(executor, CurrentThreadExecutor)


def test_work_submitted_from_another_thread_runs_in_the_creating_thread(
    in_new_thread: Callable[..., Any],
) -> None:
    executor = CurrentThreadExecutor(None)
    work = in_new_thread(
        lambda: executor.submit(lambda a, b=0: (threading.get_ident(), a + b), 2, b=3)
    )
    assert not work.done()
    serve_until_done(executor, work)
    assert work.result(timeout=0) == (threading.get_ident(), 5)


def test_run_until_future_keeps_serving_work_until_the_future_completes() -> None:
    executor = CurrentThreadExecutor(None)
    target: Future[str] = Future()
    ran: list[int] = []

    def feeder() -> None:
        # Each step is queued only after the previous one ran, so the waiting
        # thread has to go back to sleep between them.
        for step in range(3):
            executor.submit(ran.append, step).result(timeout=10)
        target.set_result("finished")

    thread = threading.Thread(target=feeder)
    thread.start()
    executor.run_until_future(target)
    thread.join(timeout=10)
    assert ran == [0, 1, 2]
    assert target.result(timeout=0) == "finished"


def test_work_queued_before_the_future_finished_still_runs(
    in_new_thread: Callable[..., Any],
) -> None:
    executor = CurrentThreadExecutor(None)
    work = in_new_thread(lambda: executor.submit(threading.get_ident))
    executor.run_until_future(finished_future())
    assert work.result(timeout=0) == threading.get_ident()


def test_exceptions_raised_by_work_are_set_on_its_future(
    in_new_thread: Callable[..., Any],
) -> None:
    executor = CurrentThreadExecutor(None)
    error = ValueError("boom")

    def fail() -> None:
        raise error

    work = in_new_thread(lambda: executor.submit(fail))
    serve_until_done(executor, work)
    assert work.exception(timeout=0) is error


def test_work_cancelled_before_it_runs_is_skipped(
    in_new_thread: Callable[..., Any],
) -> None:
    executor = CurrentThreadExecutor(None)
    calls: list[str] = []
    skipped = in_new_thread(lambda: executor.submit(calls.append, "skipped"))
    assert skipped.cancel()
    kept = in_new_thread(lambda: executor.submit(calls.append, "kept"))
    serve_until_done(executor, kept)
    assert calls == ["kept"]
    assert skipped.cancelled()


def test_submitting_from_its_own_thread_is_refused() -> None:
    executor = CurrentThreadExecutor(None)
    with pytest.raises(
        RuntimeError,
        match=r"^You cannot submit onto CurrentThreadExecutor from its own thread$",
    ):
        executor.submit(print)


def test_running_it_from_another_thread_is_refused(
    in_new_thread: Callable[..., Any],
) -> None:
    executor = CurrentThreadExecutor(None)
    with pytest.raises(
        RuntimeError,
        match=r"^You cannot run CurrentThreadExecutor from a different thread$",
    ):
        in_new_thread(lambda: executor.run_until_future(Future()))


def test_submitting_after_it_finished_without_a_fallback_is_refused(
    in_new_thread: Callable[..., Any],
) -> None:
    executor = CurrentThreadExecutor(None)
    executor.run_until_future(finished_future())
    with pytest.raises(
        RuntimeError, match=r"^CurrentThreadExecutor already quit or is broken$"
    ):
        in_new_thread(lambda: executor.submit(print))


def test_finished_executor_hands_work_to_the_executor_it_was_stacked_on(
    in_new_thread: Callable[..., Any],
) -> None:
    outer = CurrentThreadExecutor(None)
    inner = CurrentThreadExecutor(outer)
    inner.run_until_future(finished_future())

    work = in_new_thread(lambda: inner.submit(threading.get_ident))
    serve_until_done(outer, work)
    assert work.result(timeout=0) == threading.get_ident()


def test_fallback_walks_the_whole_stack_and_refuses_when_all_have_finished(
    in_new_thread: Callable[..., Any],
) -> None:
    bottom = CurrentThreadExecutor(None)
    middle = CurrentThreadExecutor(bottom)
    top = CurrentThreadExecutor(middle)
    top.run_until_future(finished_future())
    middle.run_until_future(finished_future())

    work = in_new_thread(lambda: top.submit(lambda: "reached bottom"))
    serve_until_done(bottom, work)
    assert work.result(timeout=0) == "reached bottom"

    with pytest.raises(RuntimeError, match="already quit or is broken"):
        in_new_thread(lambda: top.submit(print))
