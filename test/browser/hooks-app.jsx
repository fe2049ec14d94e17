// The page of hooks.browser.mjs: a small chat app made of the SDK's React hooks and nothing else, bundled by
// esbuild. The API's origin and the token are in the URL's fragment (#api=...&token=...). Every element the
// test reads carries its state in data- attributes; every committed state of the open conversation is logged in
// `window.commits`, so the test can tell what was on screen between two of its looks.
import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { ChatClient } from "../../src/client/index.ts";
import { useConversation, useConversationList, usePresence, useReceipts, useTyping } from "../../src/client/react.ts";

const params = new URLSearchParams(location.hash.slice(1));
const client = new ChatClient({ baseUrl: params.get("api") ?? location.origin, token: params.get("token") ?? "" });
const fast = { backoff: { initialMs: 200, maxMs: 2_000 } };
window.commits = [];

function App() {
  const list = useConversationList(client, fast);
  const [open, setOpen] = useState(null);
  return (
    <main>
      <section id="list" data-status={list.status} data-loaded={String(list.loaded)}>
        <p>
          Unread: <span id="unread-total">{list.unreadTotal}</span>
        </p>
        <ul>
          {list.conversations.map((c) => (
            <li key={c.id} data-id={c.id} data-unread={c.unreadCount}>
              <button type="button" onClick={() => setOpen(c.id)}>
                {c.title ?? c.id}
              </button>
              <span className="preview">{c.lastMessage?.preview ?? ""}</span>
            </li>
          ))}
        </ul>
      </section>
      {open && <Conversation key={open} id={open} />}
    </main>
  );
}

function Conversation({ id }) {
  const chat = useConversation(client, id, { ...fast, pageSize: 10 });
  const [autoRead, setAutoRead] = useState(true);
  const [draft, setDraft] = useState("");
  const { messages, pending, markRead } = chat;
  useEffect(() => {
    window.commits.push({
      stored: messages.map((m) => m.content),
      pending: pending.map((p) => [p.content, p.state]),
    });
  }, [messages, pending]);
  const newest = messages.at(-1)?.seq ?? 0;
  useEffect(() => {
    if (autoRead && newest > 0) markRead(newest);
  }, [autoRead, newest, markRead]);
  return (
    <section id="chat" data-id={id} data-status={chat.status} data-loaded={String(chat.loaded)}>
      <label>
        <input id="auto-read" type="checkbox" checked={autoRead} onChange={(e) => setAutoRead(e.target.checked)} />
        mark read
      </label>
      <Online chat={chat} />
      {chat.hasOlder && (
        <button id="older" type="button" onClick={() => chat.loadOlder()} disabled={chat.loadingOlder}>
          Older
        </button>
      )}
      <Messages chat={chat} />
      <Typing chat={chat} />
      <form
        id="composer"
        onSubmit={(e) => {
          e.preventDefault();
          if (draft.trim()) chat.send(draft);
          setDraft("");
        }}
      >
        <input
          id="draft"
          value={draft}
          onChange={(e) => {
            setDraft(e.target.value);
            chat.startTyping();
          }}
        />
      </form>
    </section>
  );
}

function Messages({ chat }) {
  const { statusOf } = useReceipts(chat);
  return (
    <ol id="messages">
      {chat.messages.map((m) => (
        <li
          key={m.seq}
          className="message"
          data-seq={m.seq}
          data-tick={m.senderId === chat.userId ? statusOf(m) : undefined}
        >
          {m.content}
        </li>
      ))}
      {chat.pending.map((p) => (
        <li key={p.localId} className="pending" data-state={p.state}>
          {p.content}
        </li>
      ))}
    </ol>
  );
}

function Typing({ chat }) {
  const typing = useTyping(chat);
  return <p id="typing">{typing.length > 0 ? `${typing.join(", ")} typing` : ""}</p>;
}

function Online({ chat }) {
  const online = usePresence(chat);
  return <p id="online">{online.join(" ")}</p>;
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
