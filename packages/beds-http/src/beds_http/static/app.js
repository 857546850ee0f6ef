// SPEW in the browser: the example domain's templates through the beds-http edge.
// Timelines are fetched page by page (meta.next), and kept current by the edge's
// record.changed stream of spew_post and spew_like without reloading.

import { Api } from "./api.js";
import { guarded, onSignedOut } from "./alerts.js";
import { LiveStream } from "./live.js";
import { el, MAX_BODY, plural, renderPerson, renderPost } from "./view.js";

// The templates and queries the page calls (packages/beds-templates-example/templates).
const SPEW = {
  post: "spew_post",
  like: "spew_like",
  follow: "spew_follow",
  user: "beds_user",
  home: "home",
  byAuthor: "by_author",
  byTag: "by_hashtag",
  byId: "by_id",
  following: "following",
  mine: "mine",
};
const PAGE = 20;

const api = new Api();
const $ = (id) => document.getElementById(id);
const state = {
  view: { kind: "home" },
  cursor: null,
  posts: new Map(), // id -> post record shown in the timeline
  following: new Set(),
  // Ids of the posts I like: the one truth for every Like/Unlike button. Only the home query
  // answers liked_by_me, so the other answers (by_id, by_author, by_hashtag, live records)
  // never change it; my likes at sign-in, my own clicks and my live spew_like events do.
  liked: new Set(),
  replyTo: null,
  live: null,
  generation: 0, // bumps when the view changes, so a late page of an old view is dropped
};

// ---- signing in and out ---------------------------------------------------------------------

function showSignedOut() {
  if (state.live) state.live.stop();
  state.live = null;
  $("signed-in").hidden = true;
  $("signed-out").hidden = false;
  $("logout").hidden = true;
  $("whoami").textContent = "";
}

async function showSignedIn() {
  $("signed-out").hidden = true;
  $("signed-in").hidden = false;
  $("logout").hidden = false;
  $("whoami").textContent = `Signed in as @${api.handle}`;
  state.live = new LiveStream(api, [SPEW.post, SPEW.like, SPEW.follow], {
    onEvent: onLiveEvent,
    onState: (text) => {
      $("live-status").textContent = text;
    },
  });
  state.live.start();
  await Promise.all([loadFollowing(), loadLiked()]);
  await openView({ kind: "home" });
}

async function login(form) {
  const data = new FormData(form);
  await api.login(String(data.get("handle")).trim(), String(data.get("password")));
  form.reset();
  await showSignedIn();
}

async function signup(form) {
  const data = new FormData(form);
  const handle = String(data.get("handle")).trim();
  const password = String(data.get("password"));
  await api.signup(handle, password, String(data.get("display_name") || "").trim());
  await api.login(handle, password);
  form.reset();
  await showSignedIn();
}

// ---- timelines ------------------------------------------------------------------------------

function viewTitle(view) {
  if (view.kind === "user") return `Posts by @${view.handle}`;
  if (view.kind === "tag") return `Posts tagged ${view.tag}`;
  return "Home";
}

function fetchPage(view, cursor) {
  const paging = { limit: PAGE, cursor };
  if (view.kind === "user") return api.fetch(SPEW.post, SPEW.byAuthor, { author: view.handle }, paging);
  if (view.kind === "tag") return api.fetch(SPEW.post, SPEW.byTag, { tag: view.tag.slice(1) }, paging);
  return api.fetch(SPEW.post, SPEW.home, {}, paging);
}

// Whether a post written just now belongs in the timeline on screen.
function fits(post) {
  const view = state.view;
  if (view.kind === "user") return post.author === view.handle;
  if (view.kind === "tag") return String(post.body).toLowerCase().includes(view.tag.toLowerCase());
  return post.author === api.handle || state.following.has(post.author);
}

const postActions = {
  onAuthor: (handle) => guarded(() => openView({ kind: "user", handle }))(),
  onTag: (tag) => guarded(() => openView({ kind: "tag", tag }))(),
  onReply: (post) => startReply(post),
  onLike: (post, like) => guarded(() => setLike(post, like))(),
  onDelete: (post) => guarded(() => deletePost(post))(),
};

// Adopts a home answer's liked_by_me (the only answer that carries it) into state.liked.
function adoptLiked(post) {
  if (post.liked_by_me === undefined || post.liked_by_me === null) return;
  if (post.liked_by_me) state.liked.add(post.id);
  else state.liked.delete(post.id);
}

// Shows a post (replacing its old element); its Like button follows state.liked, never a
// liked_by_me carried along in the record.
function show(post, where) {
  const record = { ...post, liked_by_me: state.liked.has(post.id) };
  const parent = post.parent_id != null ? state.posts.get(post.parent_id) : null;
  if (parent) record.parent_author = parent.author; // else the reply names the post's id
  state.posts.set(post.id, record);
  const item = renderPost(record, api.handle, postActions);
  const list = $("timeline");
  const old = list.querySelector(`li[data-id="${CSS.escape(String(post.id))}"]`);
  if (old) old.replaceWith(item);
  else if (where === "top") list.prepend(item);
  else list.append(item);
  $("timeline-empty").hidden = true;
}

async function openView(view) {
  state.view = view;
  state.generation += 1;
  state.posts.clear();
  state.cursor = null;
  $("timeline").replaceChildren();
  $("timeline-title").textContent = viewTitle(view);
  await loadMore(true);
}

async function loadMore(first = false) {
  const generation = state.generation;
  const { data, meta } = await fetchPage(state.view, first ? null : state.cursor);
  if (generation !== state.generation) return;
  for (const post of data || []) {
    adoptLiked(post);
    show(post, "bottom");
  }
  state.cursor = meta.next || null;
  $("load-more").hidden = !state.cursor;
  $("timeline-empty").hidden = state.posts.size > 0;
}

async function refreshPost(id) {
  const { data } = await api.fetch(SPEW.post, SPEW.byId, { id });
  const post = (data || [])[0];
  if (post && state.posts.has(post.id)) show({ ...state.posts.get(post.id), ...post }, "top");
}

// ---- writing --------------------------------------------------------------------------------

function updateCounter() {
  const length = [...$("compose-body").value].length; // code points, as the template counts
  const left = MAX_BODY - length;
  $("compose-counter").textContent =
    left >= 0
      ? `${plural(left, "character", "characters")} left`
      : `${plural(-left, "character", "characters")} too many`;
  $("compose-counter").classList.toggle("over", left < 0);
  $("compose-form").querySelector("button[type=submit]").disabled = left < 0 || length === 0;
}

function startReply(post) {
  state.replyTo = post;
  $("replying-text").textContent = `Replying to @${post.author}`;
  $("replying").hidden = false;
  $("compose-body").focus();
}

function cancelReply() {
  state.replyTo = null;
  $("replying").hidden = true;
}

async function publish(form) {
  const body = $("compose-body").value;
  const record = { body };
  if (state.replyTo) record.parent_id = state.replyTo.id;
  const { data } = await api.create(SPEW.post, record, crypto.randomUUID());
  const post = { ...record, ...data, author: api.handle };
  if (fits(post)) show(post, "top");
  if (state.replyTo) await refreshPost(state.replyTo.id);
  form.reset();
  cancelReply();
  updateCounter();
}

async function deletePost(post) {
  await api.remove(SPEW.post, { id: post.id });
  forgetPost(post.id);
}

function forgetPost(id) {
  state.posts.delete(id);
  const item = $("timeline").querySelector(`li[data-id="${CSS.escape(String(id))}"]`);
  if (item) item.remove();
  $("timeline-empty").hidden = state.posts.size > 0;
}

async function setLike(post, like) {
  if (like) await api.create(SPEW.like, { post_id: post.id });
  else await api.remove(SPEW.like, { post_id: post.id });
  if (like) state.liked.add(post.id);
  else state.liked.delete(post.id);
  await refreshPost(post.id);
}

// The posts I like, so the Like buttons are right in every timeline (not only in home).
async function loadLiked() {
  const ids = new Set();
  let cursor = null;
  do {
    const { data, meta } = await api.fetch(SPEW.like, SPEW.mine, {}, { limit: 100, cursor });
    for (const row of data || []) ids.add(row.post_id);
    cursor = meta.next || null;
  } while (cursor);
  state.liked = ids;
}

// ---- following ------------------------------------------------------------------------------

async function loadFollowing() {
  const handles = new Set();
  let cursor = null;
  do {
    const { data, meta } = await api.fetch(SPEW.follow, SPEW.following, {}, { limit: 100, cursor });
    for (const row of data || []) handles.add(row.followee);
    cursor = meta.next || null;
  } while (cursor);
  state.following = handles;
  renderFollowing();
}

function renderFollowing() {
  const list = $("following");
  list.replaceChildren(
    ...[...state.following].sort().map((handle) => renderPerson(handle, true, toggleFollow, openUser)),
  );
  for (const item of $("follow-results").querySelectorAll("li[data-handle]")) {
    const handle = item.dataset.handle;
    item.replaceWith(renderPerson(handle, state.following.has(handle), toggleFollow, openUser));
  }
}

function openUser(handle) {
  guarded(() => openView({ kind: "user", handle }))();
}

function toggleFollow(handle, follow) {
  guarded(async () => {
    if (follow) await api.create(SPEW.follow, { followee: handle });
    else await api.remove(SPEW.follow, { followee: handle }); // follower: bound to the caller
    if (follow) state.following.add(handle);
    else state.following.delete(handle);
    renderFollowing();
    if (state.view.kind === "home") await openView(state.view);
  })();
}

async function findPerson(form) {
  const handle = String(new FormData(form).get("handle")).trim().replace(/^@/, "").toLowerCase();
  const results = $("follow-results");
  results.replaceChildren();
  if (!handle) return;
  const { data } = await api.fetch(SPEW.user, "by_handle", { handle });
  if (!data || data.length === 0) {
    results.append(el("li", { text: `No user @${handle}` }));
  } else if (handle !== api.handle) {
    results.append(renderPerson(handle, state.following.has(handle), toggleFollow, openUser));
  } else {
    results.append(el("li", { text: "That is you." }));
  }
}

// ---- live updates ---------------------------------------------------------------------------

function onLiveEvent(name, change) {
  if (name !== "record.changed") return;
  const record = change.record || {};
  const key = change.key || {};
  if (change.template === SPEW.post) {
    const id = key.id ?? record.id;
    if (change.operation === "delete") forgetPost(id);
    else if (state.posts.has(id)) show({ ...state.posts.get(id), ...record }, "top");
    else if (change.operation === "create" && record.body !== undefined && fits(record)) {
      show({ ...record, id }, "top");
    }
    if (change.operation === "create" && record.parent_id != null && state.posts.has(record.parent_id)) {
      guarded(() => refreshPost(record.parent_id))();
    }
  } else if (change.template === SPEW.like) {
    const id = key.post_id ?? record.post_id;
    if (change.principal === api.handle) {
      if (change.operation === "delete") state.liked.delete(id);
      else state.liked.add(id);
    }
    if (state.posts.has(id)) guarded(() => refreshPost(id))();
  } else if (change.template === SPEW.follow && change.principal === api.handle) {
    guarded(loadFollowing)();
  }
}

// ---- start ----------------------------------------------------------------------------------

function wire() {
  $("login-form").addEventListener("submit", guarded((event) => login(event.target)));
  $("signup-form").addEventListener("submit", guarded((event) => signup(event.target)));
  $("logout").addEventListener(
    "click",
    guarded(async () => {
      try {
        await api.logout();
      } finally {
        showSignedOut();
      }
    }),
  );
  $("compose-form").addEventListener("submit", guarded((event) => publish(event.target)));
  $("compose-body").addEventListener("input", updateCounter);
  $("cancel-reply").addEventListener("click", cancelReply);
  $("load-more").addEventListener("click", guarded(() => loadMore()));
  $("show-home").addEventListener("click", guarded(() => openView({ kind: "home" })));
  $("show-mine").addEventListener("click", guarded(() => openView({ kind: "user", handle: api.handle })));
  $("follow-form").addEventListener("submit", guarded((event) => findPerson(event.target)));
  $("search-form").addEventListener(
    "submit",
    guarded(async (event) => {
      const tag = String(new FormData(event.target).get("tag")).trim().replace(/^#?/, "#");
      if (tag.length > 1) await openView({ kind: "tag", tag });
    }),
  );
  updateCounter();
}

onSignedOut(() => {
  if (!api.session) showSignedOut();
});
wire();
if (api.session) guarded(showSignedIn)();
else showSignedOut();
