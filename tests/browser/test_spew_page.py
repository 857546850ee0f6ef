"""The SPEW page as people use it: Chromium, the page, the edge, a node and the databases.

Elements are found by role and label (what a screen reader announces), never by CSS. Nothing
sleeps: each step waits for the element it expects (Playwright's ``expect`` polls).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from beds.testing import unique_name
from tests.browser.harness import SCREENSHOT, Spew

pytestmark = [pytest.mark.e2e, pytest.mark.mariadb, pytest.mark.mongodb, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
WAIT_MS = 15_000
"""How long a step waits for what it expects (a live update crosses the node and the edge)."""

expect.set_options(timeout=WAIT_MS)

OpenPage = Callable[[], Page]


def handle(name: str = "u") -> str:
    """A handle no other test uses: ``name`` and a random suffix (``ann_3f9c…``)."""
    return unique_name(name).lower()


@pytest.fixture
def open_page(browser: Browser, spew: Spew) -> Iterator[OpenPage]:
    """``open_page()``: a page at the SPEW URL in a browser context of its own (its own tab
    storage, so its own session); every context is closed after the test."""
    contexts: list[BrowserContext] = []

    def open_() -> Page:
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.goto(spew.url + "/")
        return page

    yield open_
    for context in contexts:
        context.close()


def sign_up(page: Page, name: str, display_name: str = "") -> None:
    form = page.get_by_role("form", name="Sign up")
    form.get_by_label("Handle").fill(name)
    if display_name:
        form.get_by_label("Display name").fill(display_name)
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_role("button", name="Sign up").click()
    expect(page.get_by_text(f"Signed in as @{name}")).to_be_visible()
    expect(page.get_by_text("Live updates: on")).to_be_visible()


def log_in(page: Page, name: str, password: str) -> None:
    form = page.get_by_role("form", name="Log in")
    form.get_by_label("Handle").fill(name)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Log in").click()


def follow(page: Page, name: str) -> None:
    box = page.get_by_role("form", name="Who to follow")
    box.get_by_label("Find a handle").fill(name)
    box.get_by_role("button", name="Find").click()
    box.get_by_role("button", name=f"Follow @{name}").click()
    expect(page.get_by_role("list", name="Following")).to_contain_text(f"@{name}")


def write(page: Page, body: str) -> None:
    page.get_by_label("What's happening?").fill(body)
    page.get_by_role("form", name="New post").get_by_role("button", name="Post").click()


def post(page: Page, text: str) -> Locator:
    """The timeline's post whose text includes ``text``."""
    return page.get_by_role("list", name="Timeline").get_by_role("article").filter(has_text=text)


def test_follow_post_like_live_across_two_users(open_page: OpenPage, artifacts: Path) -> None:
    ann, bob = handle("ann"), handle("bob")  # readable in the committed screenshot
    page_a, page_b = open_page(), open_page()
    sign_up(page_a, ann, "Ann")
    sign_up(page_b, bob, "Bob")
    follow(page_a, bob)

    body = f"hello from bob #{unique_name('t')[-8:]}"
    write(page_b, body)
    expect(post(page_b, body)).to_be_visible()  # own posts are on the home timeline
    # Ann's page did not reload: the post came over the edge's record.changed stream.
    expect(post(page_a, body)).to_be_visible()
    expect(post(page_a, body)).to_contain_text(f"@{bob}")

    post(page_a, body).get_by_role("button", name="Like").click()
    expect(post(page_a, body).get_by_role("button", name="Unlike")).to_be_visible()
    expect(post(page_a, body)).to_contain_text("1 like")
    expect(post(page_b, body)).to_contain_text("1 like")  # live on Bob's page too

    write(page_a, f"welcome @{bob}! #spew")
    expect(post(page_a, "welcome")).to_be_visible()
    page_a.screenshot(path=artifacts / "spew-timeline.png")
    if os.environ.get("BEDS_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifacts / "spew-timeline.png", SCREENSHOT)


def test_a_like_survives_a_reload_and_an_unlike_goes_live(open_page: OpenPage) -> None:
    """Only the home query says whether I like a post: the Like button must stay right after the
    post is refreshed (by_id), and after a reload in a timeline that is not home (by_hashtag)."""
    ann, bob = handle(), handle()
    page_a, page_b = open_page(), open_page()
    sign_up(page_a, ann)
    sign_up(page_b, bob)
    tag = f"#t{unique_name('h')[-10:]}"
    body = f"like me {tag}"
    write(page_b, body)
    expect(post(page_b, body)).to_be_visible()

    def search(tag: str) -> None:  # Ann does not follow Bob: she finds the post by its hashtag
        form = page_a.get_by_role("form", name="Hashtag search")
        form.get_by_label("Hashtag").fill(tag)
        form.get_by_role("button", name="Search").click()
        expect(page_a.get_by_role("heading", name=f"Posts tagged {tag}")).to_be_visible()

    search(tag)
    post(page_a, body).get_by_role("button", name="Like").click()
    expect(post(page_a, body).get_by_role("button", name="Unlike")).to_be_visible()
    expect(post(page_a, body)).to_contain_text("1 like")
    expect(post(page_b, body)).to_contain_text("1 like")  # live on Bob's page

    page_a.reload()
    expect(page_a.get_by_text(f"Signed in as @{ann}")).to_be_visible()
    search(tag)
    expect(post(page_a, body).get_by_role("button", name="Unlike")).to_be_visible()

    post(page_a, body).get_by_role("button", name="Unlike").click()
    expect(post(page_a, body).get_by_role("button", name="Like")).to_be_visible()
    expect(post(page_a, body)).to_contain_text("0 likes")
    expect(post(page_b, body)).to_contain_text("0 likes")  # live on Bob's page too
    expect(post(page_b, body).get_by_role("button", name="Like")).to_be_visible()


def test_a_post_with_markup_renders_as_text(open_page: OpenPage) -> None:
    page = open_page()
    sign_up(page, handle())
    page.evaluate("window.__spewXss = 0")
    body = '<img src=x onerror="window.__spewXss = 1"><b>bold</b>'
    write(page, body)
    shown = post(page, "onerror")
    expect(shown).to_be_visible()
    expect(shown.locator("p").filter(has_text="onerror")).to_have_text(body)
    assert shown.locator("img").count() == 0
    assert shown.locator("b").count() == 0
    assert page.evaluate("window.__spewXss") == 0
    # After a reload (the timeline fetched from the edge, not only what this page sent).
    page.reload()
    expect(post(page, "onerror").locator("p").filter(has_text="onerror")).to_have_text(body)
    assert page.evaluate("window.__spewXss ?? 0") == 0


def test_a_wrong_password_shows_the_error(open_page: OpenPage) -> None:
    page = open_page()
    name = handle()
    sign_up(page, name)
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("form", name="Log in")).to_be_visible()
    log_in(page, name, PASSWORD + "x")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("the handle or the password is not right")
    expect(alert).to_contain_text("BEDS-401")
    expect(page.get_by_role("form", name="Log in")).to_be_visible()
    log_in(page, name, PASSWORD)
    expect(page.get_by_text(f"Signed in as @{name}")).to_be_visible()
    expect(alert).to_be_hidden()


def test_counter_reply_hashtag_user_timeline_unfollow(open_page: OpenPage) -> None:
    ann, bob = handle(), handle()
    page_a, page_b = open_page(), open_page()
    sign_up(page_a, ann)
    sign_up(page_b, bob)

    composer = page_a.get_by_label("What's happening?")
    submit = page_a.get_by_role("form", name="New post").get_by_role("button", name="Post")
    composer.fill("hé 🙂")  # code points, as the template counts them
    expect(page_a.get_by_text("276 characters left")).to_be_visible()
    composer.fill("x" * 281)
    expect(page_a.get_by_text("1 character too many")).to_be_visible()
    expect(submit).to_be_disabled()

    tag = f"#t{unique_name('h')[-10:]}"
    write(page_b, f"first from bob {tag}")
    follow(page_a, bob)
    expect(post(page_a, "first from bob")).to_be_visible()  # following loads their posts

    post(page_a, "first from bob").get_by_role("button", name="Reply").click()
    expect(page_a.get_by_text(f"Replying to @{bob}")).to_be_visible()
    write(page_a, f"a reply from ann {tag}")
    reply = post(page_a, "a reply from ann")
    expect(reply).to_contain_text(f"In reply to @{bob}")  # the post it answers is on screen
    expect(post(page_a, "first from bob")).to_contain_text("1 reply")

    # A hashtag in a post is a search; both posts carry it.
    post(page_a, "first from bob").get_by_role("button", name=tag).click()
    expect(page_a.get_by_role("heading", name=f"Posts tagged {tag}")).to_be_visible()
    expect(post(page_a, "first from bob")).to_be_visible()
    expect(post(page_a, "a reply from ann")).to_be_visible()
    search = page_a.get_by_role("form", name="Hashtag search")
    search.get_by_label("Hashtag").fill("nothing" + tag[1:])
    search.get_by_role("button", name="Search").click()
    expect(page_a.get_by_text("No posts yet.")).to_be_visible()

    post_author = page_a.get_by_role("button", name=f"@{bob}")
    page_a.get_by_role("button", name="Home").click()
    post_author.first.click()
    expect(page_a.get_by_role("heading", name=f"Posts by @{bob}")).to_be_visible()
    expect(post(page_a, "first from bob")).to_be_visible()
    expect(post(page_a, "a reply from ann")).to_have_count(0)

    page_a.get_by_role("button", name=f"Unfollow @{bob}").first.click()
    page_a.get_by_role("button", name="Home").click()
    expect(page_a.get_by_role("heading", name="Home")).to_be_visible()
    expect(post(page_a, "a reply from ann")).to_be_visible()
    expect(post(page_a, "first from bob")).to_have_count(0)


def test_load_more_pages_with_the_cursor(open_page: OpenPage) -> None:
    page = open_page()
    sign_up(page, handle())
    total = 23  # more than one page of 20
    for number in range(total):
        write(page, f"numbered post {number:02d}")
        expect(post(page, f"numbered post {number:02d}")).to_be_visible()
    page.reload()
    articles = page.get_by_role("list", name="Timeline").get_by_role("article")
    expect(articles).to_have_count(20)
    expect(articles.first).to_contain_text(f"numbered post {total - 1:02d}")  # newest first
    page.get_by_role("button", name="Load more").click()
    expect(articles).to_have_count(total)
    expect(articles.last).to_contain_text("numbered post 00")
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    texts = [re.search(r"numbered post (\d+)", t) for t in articles.all_inner_texts()]
    assert [int(m.group(1)) for m in texts if m] == list(range(total - 1, -1, -1))


def test_the_event_stream_parser_reassembles_split_chunks(open_page: OpenPage) -> None:
    """The page's text/event-stream parser: events split anywhere across network chunks, CRLF
    or LF line ends, keep-alive comments, multi-line data, and an id carried to the event."""
    page = open_page()
    stream = (
        ": keep-alive\r\n\r\n"
        'id: 7\r\nevent: record.changed\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        "data: second\n\n"
        "event: ticket\ndata: third\n\n"
    )
    parsed = page.evaluate(
        """async (stream) => {
            const { EventStreamParser } = await import("./live.js");
            const results = [];
            for (let size = 1; size <= stream.length; size += 1) {
                const parser = new EventStreamParser();
                const events = [];
                for (let at = 0; at < stream.length; at += size) {
                    events.push(...parser.push(stream.slice(at, at + size)));
                }
                results.push(JSON.stringify(events));
            }
            return results;
        }""",
        stream,
    )
    expected = [
        {"id": "7", "event": "record.changed", "data": '{"a":\n1}'},
        {"id": None, "event": "message", "data": "second"},
        {"id": None, "event": "ticket", "data": "third"},
    ]
    assert {json.dumps(expected, separators=(",", ":"))} == set(parsed)
