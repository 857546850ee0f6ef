// Building the page's DOM. Every piece of user text (bodies, handles, names, error details) is
// set with textContent or as a text node, never with innerHTML: a post reading
// <img src=x onerror=...> shows those characters and runs nothing.

export const MAX_BODY = 280;
const TAG = /(#[\p{L}\p{N}_]+)/u;

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

function when(iso) {
  if (!iso) return null;
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return null;
  return el("time", { datetime: iso, text: date.toLocaleString() });
}

// The body as text nodes, with each #hashtag a button that searches it.
function bodyNodes(body, onTag) {
  return String(body)
    .split(TAG)
    .filter((part) => part !== "")
    .map((part) =>
      TAG.test(part) && part.startsWith("#")
        ? el("button", { type: "button", class: "tag", text: part, onclick: () => onTag(part) })
        : document.createTextNode(part),
    );
}

// One post as an <article> (role "article", named "Post by @handle").
// actions: {onAuthor(handle), onTag(tag), onReply(post), onLike(post, liked), onDelete(post)}.
export function renderPost(post, me, actions) {
  const likes = Number(post.like_count || 0);
  const liked = Boolean(post.liked_by_me);
  const replies = Number(post.reply_count || 0);
  const article = el(
    "article",
    { class: "post", "aria-label": `Post by @${post.author}`, "data-id": post.id },
    el(
      "header",
      {},
      el("button", {
        type: "button",
        class: "author",
        text: `@${post.author}`,
        onclick: () => actions.onAuthor(post.author),
      }),
      " ",
      when(post.created_at),
    ),
    post.parent_id != null
      ? el("p", {
          class: "reply-to",
          text: post.parent_author
            ? `In reply to @${post.parent_author}`
            : `In reply to post ${post.parent_id}`,
        })
      : null,
    el("p", { class: "body" }, ...bodyNodes(post.body, actions.onTag)),
    el(
      "footer",
      {},
      el("button", {
        type: "button",
        class: "like",
        "aria-pressed": liked ? "true" : "false",
        text: liked ? "Unlike" : "Like",
        onclick: () => actions.onLike(post, !liked),
      }),
      el("span", { class: "likes", text: plural(likes, "like", "likes") }),
      el("button", { type: "button", text: "Reply", onclick: () => actions.onReply(post) }),
      el("span", { class: "replies", text: plural(replies, "reply", "replies") }),
      post.author === me
        ? el("button", { type: "button", text: "Delete", onclick: () => actions.onDelete(post) })
        : null,
    ),
  );
  return el("li", { "data-id": post.id }, article);
}

// One handle with a Follow / Unfollow button (named "Follow @bob" / "Unfollow @bob").
export function renderPerson(handle, following, onToggle, onOpen) {
  const verb = following ? "Unfollow" : "Follow";
  return el(
    "li",
    { "data-handle": handle },
    el("button", { type: "button", class: "author", text: `@${handle}`, onclick: () => onOpen(handle) }),
    " ",
    el("button", {
      type: "button",
      "aria-label": `${verb} @${handle}`,
      text: verb,
      onclick: () => onToggle(handle, !following),
    }),
  );
}
