"""Interpreter exit: it never hangs on a loop thread, and never cuts a
coroutine in flight short.

Each test runs a script in a fresh interpreter and waits (bounded) for it to
end. Upstream runs every ``async_to_sync`` loop on a pool thread that the
interpreter joins at exit, so a coroutine still running then (for a daemon
thread, or for a main thread interrupted by Ctrl-C) finishes first; these
are plain behaviour tests, except where marked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGINT") or sys.platform == "win32",
    reason="POSIX signals and process exit codes",
)

EXIT_TIMEOUT = 30.0


def run_script(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a new interpreter; fail if it does not end in time."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True,
            text=True,
            timeout=EXIT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"the interpreter did not exit within {EXIT_TIMEOUT}s; "
            f"it printed {exc.stdout!r}"
        )


def lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return done.stdout.splitlines()


def test_a_block_never_exited_is_wound_down_and_lets_the_interpreter_exit() -> None:
    done = run_script(
        """
        import asyncio
        from asgiref.sync import AsyncSingleThreadContext, async_to_sync

        async def ticker():
            try:
                await asyncio.sleep(3600)
            finally:
                print("task cancelled", flush=True)

        async def numbers():
            try:
                yield 1
                yield 2
            finally:
                print("generator closed", flush=True)

        kept = []

        async def start():
            kept.append(asyncio.get_running_loop().create_task(ticker()))
            generator = numbers()
            await generator.__anext__()
            kept.append(generator)

        AsyncSingleThreadContext().__enter__()  # never exited
        async_to_sync(start)()
        print("end", flush=True)
        """
    )
    assert done.returncode == 0, done.stderr
    assert sorted(lines(done)) == ["end", "generator closed", "task cancelled"]


def test_a_block_dropped_without_exiting_lets_the_interpreter_exit() -> None:
    done = run_script(
        """
        import threading
        from asgiref.sync import AsyncSingleThreadContext, async_to_sync

        async def one():
            return 1

        def enter_and_forget():
            AsyncSingleThreadContext().__enter__()
            print(async_to_sync(one)(), flush=True)

        thread = threading.Thread(target=enter_and_forget)
        thread.start()
        thread.join()
        print("end", flush=True)
        """
    )
    assert done.returncode == 0, done.stderr
    assert lines(done) == ["1", "end"]


def test_a_call_after_its_block_exited_runs_outside_it_and_lets_the_interpreter_exit() -> (
    None
):
    done = run_script(
        """
        import asyncio, contextvars
        from asgiref.sync import AsyncSingleThreadContext, async_to_sync

        async def running_loop():
            return asyncio.get_running_loop()

        with AsyncSingleThreadContext():
            kept = contextvars.copy_context()  # still names the block
        loop = kept.run(async_to_sync(running_loop))
        print("closed" if loop.is_closed() else "open", flush=True)
        """
    )
    assert done.returncode == 0, done.stderr
    assert lines(done) == ["closed"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize(
    "child_calls",
    [
        pytest.param(False, id="idle"),
        # Upstream's child hands the call to the parent's pool, whose thread
        # it does not have, and waits for good.
        pytest.param(True, id="calling", marks=pytest.mark.asgire_only),
    ],
)
def test_a_child_forked_inside_a_block_leaves_it_and_exits(child_calls: bool) -> None:
    done = run_script(
        f"CHILD_CALLS = {child_calls}\n"
        + textwrap.dedent(
            """
            import asyncio, os, warnings
            from asgiref.sync import AsyncSingleThreadContext, async_to_sync

            warnings.simplefilter("ignore", DeprecationWarning)  # fork, threads

            async def pid():
                return os.getpid()

            with AsyncSingleThreadContext():
                async_to_sync(pid)()
                child = os.fork()
                if child == 0 and CHILD_CALLS:
                    assert async_to_sync(pid)() == os.getpid()
            if child == 0:
                print("child left", flush=True)
            else:
                os.waitpid(child, 0)
                print("parent left", flush=True)
            """
        )
    )
    assert done.returncode == 0, done.stderr
    assert lines(done) == ["child left", "parent left"]


DAEMON_CALLER = """
    import asyncio, threading
    from asgiref.sync import AsyncSingleThreadContext, async_to_sync

    started = threading.Event()

    async def work():
        # Upstream's caller registers the pool thread for exit as it starts:
        # give it time to, before the main thread ends.
        await asyncio.sleep(0.1)
        started.set()
        try:
            await asyncio.sleep(0.3)
            print("finished", flush=True)
        finally:
            print("finally", flush=True)

    def call():
        if IN_BLOCK:
            AsyncSingleThreadContext().__enter__()  # never exited
        async_to_sync(work)()

    threading.Thread(target=call, daemon=True).start()
    started.wait()
    print("main done", flush=True)
"""


@pytest.mark.parametrize("in_block", [False, True], ids=["fresh-loop", "block"])
def test_a_daemon_threads_coroutine_finishes_at_exit(in_block: bool) -> None:
    done = run_script(f"IN_BLOCK = {in_block}\n" + textwrap.dedent(DAEMON_CALLER))
    assert done.returncode == 0, done.stderr
    assert lines(done)[:3] == ["main done", "finished", "finally"]


def test_a_daemon_thread_calling_on_at_exit_is_refused_rather_than_cut_short() -> None:
    done = run_script(
        """
        import asyncio, threading
        from asgiref.sync import async_to_sync

        called = threading.Event()

        async def tick():
            print("start", flush=True)
            called.set()
            try:
                await asyncio.sleep(0.05)
            finally:
                print("end", flush=True)

        def forever():
            # The refusal ends the thread quietly: a traceback printed while
            # the interpreter finalizes may find stderr's lock held and abort.
            try:
                while True:
                    async_to_sync(tick)()
            except RuntimeError:
                pass

        threading.Thread(target=forever, daemon=True).start()
        called.wait()
        print("main done", flush=True)
        """
    )
    assert done.returncode == 0, done.stderr
    output = lines(done)
    assert "main done" in output
    # The call in flight at exit finishes; none starts after it.
    assert output.count("start") == output.count("end")
    assert output[-1] == "end"


def test_a_call_made_once_the_main_thread_has_finished_is_refused() -> None:
    # As upstream's pools refuse work then: a call could otherwise start
    # after exit stopped waiting, and be cut short.
    done = run_script(
        """
        import threading, time
        from asgiref.sync import async_to_sync

        async def one():
            return 1

        def late():
            time.sleep(0.5)  # the main thread is done by now
            try:
                async_to_sync(one)()
            except RuntimeError as exc:
                print(exc, flush=True)

        threading.Thread(target=late).start()
        """
    )
    assert done.returncode == 0, done.stderr
    assert lines(done) == ["cannot schedule new futures after interpreter shutdown"]


CTRL_C = """
    import asyncio, os, signal
    from asgiref.sync import AsyncSingleThreadContext, async_to_sync, sync_to_async

    async def work():
        try:
            await asyncio.sleep(0.2)  # the main thread is waiting by now
            os.kill(os.getpid(), signal.SIGINT)  # and this interrupts it
            await asyncio.sleep(0.3)
            if SEND_BACK:
                try:
                    await sync_to_async(print)("ran on the interrupted thread")
                except RuntimeError:
                    print("refused", flush=True)
            print("finished", flush=True)
        finally:
            print("finally", flush=True)

    try:
        if IN_BLOCK:
            with AsyncSingleThreadContext():
                async_to_sync(work)()
        else:
            async_to_sync(work)()
    finally:
        print("main left", flush=True)
"""


def run_interrupted(*, in_block: bool, send_back: bool) -> list[str]:
    done = run_script(
        f"IN_BLOCK = {in_block}\nSEND_BACK = {send_back}\n" + textwrap.dedent(CTRL_C)
    )
    assert done.returncode != 0
    assert "KeyboardInterrupt" in done.stderr
    return lines(done)


def test_ctrl_c_lets_the_coroutine_finish_before_the_interpreter_exits() -> None:
    assert run_interrupted(in_block=False, send_back=False) == [
        "main left",
        "finished",
        "finally",
    ]


def test_ctrl_c_in_a_block_lets_the_coroutine_finish_before_the_block_is_left() -> None:
    assert run_interrupted(in_block=True, send_back=False) == [
        "finished",
        "finally",
        "main left",
    ]


@pytest.mark.asgire_only
@pytest.mark.parametrize("in_block", [False, True], ids=["fresh-loop", "block"])
def test_after_ctrl_c_work_sent_to_the_interrupted_thread_fails_instead_of_hanging(
    in_block: bool,
) -> None:
    # Upstream queues it for the interrupted thread, which never runs it, and
    # the interpreter then waits for the coroutine for good.
    output = run_interrupted(in_block=in_block, send_back=True)
    output.remove("main left")
    assert output == ["refused", "finished", "finally"]
