"""The in-process wake-up hub: who is woken by which change."""

from __future__ import annotations

from app.queue.notify import JobEvents


async def test_a_change_before_the_wait_still_wakes_a_subscriber() -> None:
    events = JobEvents()
    with events.subscribe("gen_1") as subscription:
        # Committed between the waiter's read of the row and its wait.
        events.job_changed("gen_1")
        assert await subscription.wait(0.01) is True
        # Woken once per change: the next wait sleeps again.
        assert await subscription.wait(0.01) is False


async def test_progress_wakes_only_subscribers_that_follow_progress() -> None:
    events = JobEvents()
    with events.subscribe("gen_1", progress=False) as result_waiter, events.subscribe("gen_1") as stream:
        events.job_changed("gen_1", progress=True)
        assert await stream.wait(0.01) is True
        assert await result_waiter.wait(0.01) is False
        events.job_changed("gen_1")
        assert await result_waiter.wait(0.01) is True


async def test_other_jobs_do_not_wake_and_wake_all_wakes_everyone() -> None:
    events = JobEvents()
    with events.subscribe("gen_1") as one, events.subscribe("gen_2", progress=False) as two:
        events.job_changed("gen_3")
        assert await one.wait(0.01) is False
        events.wake_all()
        assert await one.wait(0.01) is True
        assert await two.wait(0.01) is True
    # Subscriptions end with their block.
    assert not events._subscriptions
