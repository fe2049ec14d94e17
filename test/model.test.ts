import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { ERROR_STATUS } from "../src/errors";
import type { MessageDto, ParticipantDto } from "../src/schemas";
import { type FaultMode, failNextWrite, faultStats } from "./faults";
import { call, createConversation, uniqueUser } from "./helpers";
import { MODEL_CI_RUNS, propertyRuns, reportFigures } from "./property";
import { connect, type TestSocket } from "./socket";

/*
 * A model-based property test of the room. fast-check draws a sequence of commands (send over REST or a
 * socket, resend a localId, concurrent bursts, reconnect with since, hibernate the Object, restart it, fail
 * the next D1 write, mark read, edit, delete); they run against the real Worker, Object and D1 while a model
 * tracks what every answer promised. After each sequence every guarantee of API.md is checked against D1,
 * REST history and every frame every socket got.
 */

const USERS = 3; // user 0 owns the conversation
const CLIENTS: number[] = [0, 1, 2, 0]; // the user of each socket client: user 0 has two devices
const CONTENTS = ["hi", "héllo wörld", "😀 two code units", "line 1\nline 2", "  padded  ", "x".repeat(4000)];
const WAIT_MS = 8_000;

type Via = "rest" | "socket";
type Cmd =
  | { kind: "send"; via: Via; client: number; text: number }
  | { kind: "resend"; via: Via; pick: number }
  | { kind: "burst"; items: { via: Via; client: number; text: number; dup: number | null }[] }
  | { kind: "reconnect"; client: number; wait: boolean }
  | { kind: "hibernate" }
  | { kind: "restart" }
  | { kind: "fail" }
  | { kind: "read"; via: Via; client: number; ahead: number }
  | { kind: "edit"; pick: number; text: number; byOther: boolean }
  | { kind: "delete"; pick: number; actor: "sender" | "owner" | "other" };

const via = fc.constantFrom<Via>("rest", "socket");
const client = fc.nat({ max: CLIENTS.length - 1 });
const text = fc.nat({ max: CONTENTS.length - 1 });
const pick = fc.nat({ max: 1000 });

const command: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant("send" as const), via, client, text }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("resend" as const), via, pick }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("burst" as const),
      items: fc.array(fc.record({ via, client, text, dup: fc.option(fc.nat({ max: 5 }), { freq: 3 }) }), {
        minLength: 2,
        maxLength: 6,
      }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("reconnect" as const), client, wait: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ kind: "hibernate" as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: "restart" as const }) },
  { weight: 2, arbitrary: fc.constant({ kind: "fail" as const }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("read" as const), via, client, ahead: fc.integer({ min: -2, max: 3 }) }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("edit" as const), pick, text, byOther: fc.boolean() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("delete" as const),
      pick,
      actor: fc.constantFrom("sender" as const, "owner" as const, "other" as const),
    }),
  },
);

// ---- What the test observed and what the model expects --------------------------------------------------

/** One socket client: what it was given, connection after connection. */
interface Client {
  user: string;
  socket: TestSocket | undefined;
  /** Frames of the current socket already looked at. */
  cursor: number;
  /** seq → message id, from message frames and acks: each seq at most once. */
  delivered: Map<number, string>;
  /** How each seq was given: a message frame, the ack of its first send here, or the ack of a retry. */
  via: Map<number, "message" | "first-ack" | "retry-ack">;
  /** seq → the newest content this client was told (message, ack or message_updated). */
  content: Map<number, string>;
  /** The step its current connection opened at, and the since it asked for. */
  connectedAt: number;
  since: number;
  /** The last message frame's seq on the current connection: they must ascend. */
  lastMessageSeq: number;
  /** Its localIds in flight whose ack answers a first send (no concurrent duplicate, nothing stored before). */
  fresh: Set<string>;
  /** Frames of the current socket taken as the answer to a send. */
  claimed: Set<number>;
  violations: string[];
}

/** What the model knows of one (sender, localId). */
interface Sent {
  user: string;
  localId: string;
  content: string;
  /** stored: some answer acknowledged it; refused: only 429 or 503 before commit; unknown: a reply was lost. */
  state: "stored" | "refused" | "unknown";
  id?: string;
  seq?: number;
}

interface Model {
  sends: Sent[];
  bySeq: Map<number, Sent>;
  /** seq → current content ("" once deleted), deleted flag, and the step of the last change. */
  current: Map<number, { content: string; deleted: boolean; changedAt: number; versions: Set<string> }>;
  /** Read markers: [lo, hi], equal unless a reply was lost. */
  read: Map<string, [number, number]>;
  armed: boolean;
  step: number;
  uncertain: boolean;
}

const figures = {
  sequences: 0,
  commands: 0,
  sends: 0,
  messagesChecked: 0,
  frameChecks: 0,
  reconnects: 0,
  evictions: 0,
};

const key = (user: string, localId: string) => `${user}\u0000${localId}`;

function absorb(c: Client) {
  const s = c.socket;
  if (!s) return;
  for (; c.cursor < s.frames.length; c.cursor++) {
    const f = s.frames[c.cursor];
    if (!f) continue;
    figures.frameChecks++;
    switch (f.type) {
      case "message": {
        const { seq, id, content } = f.message;
        const before = c.via.get(seq);
        // After the ack of a retry, the message itself may still come (the retry did not send it).
        if (before === "message" || before === "first-ack")
          c.violations.push(`seq ${seq} given twice (${before}, message)`);
        if (seq <= c.lastMessageSeq) c.violations.push(`message seq ${seq} after ${c.lastMessageSeq}`);
        if (seq <= c.since) c.violations.push(`message seq ${seq} replayed although since=${c.since}`);
        if (before && c.delivered.get(seq) !== id) c.violations.push(`seq ${seq} is ${id} and ${c.delivered.get(seq)}`);
        c.lastMessageSeq = seq;
        c.delivered.set(seq, id);
        c.via.set(seq, "message");
        c.content.set(seq, content);
        break;
      }
      case "ack": {
        const { seq, id, content } = f.message;
        const first = c.fresh.delete(f.localId);
        if (first && c.via.has(seq))
          c.violations.push(`seq ${seq} given twice (${c.via.get(seq)}, ack of a first send)`);
        if (c.delivered.has(seq) && c.delivered.get(seq) !== id)
          c.violations.push(`ack of ${f.localId} names ${id} at seq ${seq}, which was ${c.delivered.get(seq)}`);
        if (!c.via.has(seq)) {
          c.delivered.set(seq, id);
          c.via.set(seq, first ? "first-ack" : "retry-ack");
          c.content.set(seq, content);
        }
        break;
      }
      case "message_updated":
        if (c.delivered.has(f.message.seq)) c.content.set(f.message.seq, f.message.content);
        break;
      case "error":
        if (!(f.code in ERROR_STATUS) || f.code === "internal") c.violations.push(`error frame ${JSON.stringify(f)}`);
        // Refusals this model provokes; anything else is a finding.
        if (!["unavailable", "rate_limited", "idempotency_conflict", "validation_failed"].includes(f.code))
          c.violations.push(`unexpected error frame ${JSON.stringify(f)}`);
        break;
      case "resync":
        c.violations.push("resync for a short history");
        break;
      default:
        break;
    }
  }
}

function maxContiguous(c: Client): number {
  let n = 0;
  while (c.delivered.has(n + 1)) n++;
  return n;
}

async function open(run: Run, c: Client, wait: boolean) {
  const { model } = run;
  if (c.socket && !c.socket.closed) {
    c.socket.close();
    await c.socket.waitClosed();
  }
  if (c.socket) absorb(c);
  const since = maxContiguous(c);
  c.socket = await connect(run.conversationId, c.user, { since });
  c.cursor = 0;
  c.claimed = new Set();
  c.since = since;
  c.lastMessageSeq = since;
  c.connectedAt = model.step;
  figures.reconnects++;
  absorb(c);
  if (wait) await caughtUp(c, model);
}

/** Waits until the client was given every seq the model knows is stored. */
async function caughtUp(c: Client, model: Model, upTo = knownLastSeq(model)) {
  if (!c.socket || c.socket.closed) return;
  await c.socket.until(
    () => {
      absorb(c);
      return maxContiguous(c) >= upTo;
    },
    WAIT_MS,
    `${c.user} to catch up to ${upTo}`,
  );
}

function knownLastSeq(model: Model): number {
  return Math.max(0, ...model.bySeq.keys());
}

function record(model: Model, sent: Sent, message: MessageDto) {
  if (sent.id !== undefined && sent.id !== message.id)
    throw new Error(`localId ${sent.localId} answered with ${message.id} after ${sent.id}`);
  sent.state = "stored";
  sent.id = message.id;
  sent.seq = message.seq;
  if (!model.current.has(message.seq)) {
    model.bySeq.set(message.seq, sent);
    model.current.set(message.seq, {
      content: sent.content,
      deleted: false,
      changedAt: model.step,
      versions: new Set([sent.content]),
    });
    // Sending moves the sender's own read marker to it.
    const [lo, hi] = model.read.get(sent.user) ?? [0, 0];
    model.read.set(sent.user, [Math.max(lo, message.seq), Math.max(hi, message.seq)]);
  }
}

/** An answer that is not a success: what it says about the write, for the model. */
function refusal(run: Run, status: number, code: string | undefined): "refused" | "unknown" {
  const { model } = run;
  if (status === 503 && code === "unavailable") {
    // A failed batch fails every write in it: the sends of a burst that went in one group.
    if (!model.armed && !run.firedInBurst) throw new Error("503 unavailable without an injected failure");
    if (run.inBurst) run.firedInBurst = true;
    model.armed = false;
    if (run.mode === "after-commit") model.uncertain = true;
    return run.mode === "after-commit" ? "unknown" : "refused";
  }
  if (status === 429 && code === "rate_limited") return "refused";
  throw new Error(`unexpected answer ${status} ${code}`);
}

interface Run {
  model: Model;
  clients: Client[];
  users: string[];
  conversationId: string;
  mode: FaultMode;
  localIds: number;
  inBurst: boolean;
  firedInBurst: boolean;
  /** faultStats.fired when the failure was armed: once it moved, the failure struck. */
  firedAtArm: number;
}

/**
 * Armed, a failure before commit must strike the next write. One after commit may not show at all: the room
 * looks for what the batch stored, and announces it as usual when it finds it.
 */
const mustFail = (run: Run) => run.model.armed && run.mode === "before-commit";

function settle(sent: Sent, state: "refused" | "unknown") {
  if (sent.state === "stored") return;
  sent.state = state === "unknown" || sent.state === "unknown" ? "unknown" : "refused";
}

/**
 * Sends one message, over REST or a socket, and puts its answer in the model. `first`: nothing stored this
 * localId before and no other send of it is in flight, so a success must be a 201 (or a first-send ack).
 */
async function sendOne(run: Run, from: Client, sent: Sent, how: Via, first: boolean) {
  const { model } = run;
  figures.sends++;
  if (how === "socket") {
    if (!from.socket || from.socket.closed) await open(run, from, false);
    const socket = from.socket as TestSocket;
    const start = socket.frames.length;
    if (first) from.fresh.add(sent.localId);
    socket.send({ type: "send", localId: sent.localId, content: sent.content });
    // Two sends of one localId on one socket get two answers: each takes its own.
    const index = await socket.until(
      (s) => {
        for (let i = start; i < s.frames.length; i++) {
          const f = s.frames[i];
          const mine =
            (f?.type === "ack" && f.localId === sent.localId) || (f?.type === "error" && f.ref === sent.localId);
          if (mine && !from.claimed.has(i)) {
            from.claimed.add(i);
            return i + 1;
          }
        }
        return undefined;
      },
      WAIT_MS,
      `the answer to ${sent.localId}`,
    );
    const answer = socket.frames[index - 1] as (typeof socket.frames)[number];
    if (answer.type === "ack") {
      expect(answer.message).toMatchObject({ senderId: sent.user, localId: sent.localId });
      record(model, sent, answer.message);
    } else if (answer.type === "error") {
      from.fresh.delete(sent.localId);
      const status: number = ERROR_STATUS[answer.code as keyof typeof ERROR_STATUS] ?? 0;
      settle(sent, refusal(run, status, answer.code));
    }
    return;
  }
  const stateBefore = sent.state;
  const res = await call(`/v1/conversations/${run.conversationId}/messages`, {
    method: "POST",
    as: sent.user,
    body: { content: sent.content, localId: sent.localId },
  });
  const body = (await res.json()) as MessageDto & { error?: { code: string } };
  if (res.status === 201 || res.status === 200) {
    expect(body).toMatchObject({ senderId: sent.user, localId: sent.localId });
    record(model, sent, body);
    // A localId stored before is answered 200 with the original; one never stored, 201.
    if (stateBefore === "stored") expect(res.status, `retry of ${sent.localId}`).toBe(200);
    if (first && stateBefore === "refused") expect(res.status, `first store of ${sent.localId}`).toBe(201);
  } else {
    const state = refusal(run, res.status, body.error?.code);
    if (res.status === 503 || res.status === 429) expect(res.headers.get("Retry-After")).toMatch(/^[1-9]\d*$/);
    settle(sent, state);
  }
}

/** Polls an async check until it returns something, or fails after WAIT_MS. */
async function poll<T>(check: () => Promise<T | undefined>, what: string): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Evicts the room as the runtime would: hibernating (sockets kept) or restarting (sockets closed). */
async function evict(conversationId: string, webSockets: "hibernate" | "close") {
  const stub = env.ROOMS.getByName(conversationId);
  // Only a running Object can be evicted: wake it (an Object hibernated already stays as it is).
  await runInDurableObject(stub, () => {});
  await evictDurableObject(stub, { webSockets });
}

function newSend(run: Run, from: Client, textIndex: number): Sent {
  const sent: Sent = {
    user: from.user,
    localId: `m${run.localIds++}`,
    content: CONTENTS[textIndex] as string,
    state: "refused",
  };
  run.model.sends.push(sent);
  return sent;
}

async function runCommand(run: Run, cmd: Cmd) {
  const { model, clients, users, conversationId } = run;
  model.step++;
  figures.commands++;
  // A failure that struck during the last command without a 503 (the room found what it stored) is spent.
  if (model.armed && faultStats.fired > run.firedAtArm) model.armed = false;
  const stored = () => [...model.bySeq.keys()].sort((a, b) => a - b);
  switch (cmd.kind) {
    case "send": {
      const from = clients[cmd.client] as Client;
      await sendOne(run, from, newSend(run, from, cmd.text), cmd.via, true);
      return;
    }
    case "resend": {
      if (model.sends.length === 0) return;
      const sent = model.sends[cmd.pick % model.sends.length] as Sent;
      const from = clients.find((c) => c.user === sent.user) as Client;
      await sendOne(run, from, sent, cmd.via, sent.state === "refused");
      return;
    }
    case "burst": {
      const planned = cmd.items.map((item) => {
        const from = clients[item.client] as Client;
        const earlier =
          item.dup === null ? undefined : model.sends.filter((s) => s.user === from.user).at(-1 - item.dup);
        return { from, sent: earlier ?? newSend(run, from, item.text), how: item.via };
      });
      const times = new Map<Sent, number>();
      for (const p of planned) times.set(p.sent, (times.get(p.sent) ?? 0) + 1);
      // Connect first, so that every send of the burst is in flight at once.
      for (const p of planned)
        if (p.how === "socket" && (!p.from.socket || p.from.socket.closed)) await open(run, p.from, false);
      const first = planned.map((p) => times.get(p.sent) === 1 && p.sent.state === "refused");
      run.inBurst = true;
      run.firedInBurst = false;
      try {
        await Promise.all(planned.map((p, i) => sendOne(run, p.from, p.sent, p.how, first[i] === true)));
      } finally {
        run.inBurst = false;
        run.firedInBurst = false;
      }
      return;
    }
    case "reconnect":
      await open(run, clients[cmd.client] as Client, cmd.wait);
      return;
    case "hibernate": {
      // The runtime hibernates an idle Object only: let every catch-up finish first.
      for (const c of clients) await caughtUp(c, model);
      await evict(conversationId, "hibernate");
      figures.evictions++;
      model.armed = false;
      return;
    }
    case "restart": {
      await evict(conversationId, "close");
      figures.evictions++;
      model.armed = false;
      for (const c of clients) {
        if (!c.socket) continue;
        await c.socket.waitClosed();
        absorb(c);
      }
      return;
    }
    case "fail":
      if (model.armed) return;
      run.firedAtArm = faultStats.fired;
      await failNextWrite(conversationId, run.mode);
      model.armed = true;
      return;
    case "read": {
      const from = clients[cmd.client] as Client;
      const last = knownLastSeq(model);
      const seq = Math.max(0, last + cmd.ahead);
      const [lo, hi] = model.read.get(from.user) ?? [0, 0];
      const target = Math.min(seq, last);
      const expected = Math.max(lo, target);
      const moved: [number, number] = [expected, Math.max(hi, run.mode === "after-commit" ? seq : target)];
      // A read frame is answered only when refused, so it needs a marker that moves to be seen done.
      if (cmd.via === "rest" || !from.socket || from.socket.closed || expected <= lo) {
        const res = await call(`/v1/conversations/${conversationId}/read`, {
          method: "POST",
          as: from.user,
          body: { seq },
        });
        const body = (await res.json()) as ParticipantDto & { error?: { code: string } };
        // A read that moves nothing may be answered 200 though its batch failed: the room finds the marker where
        // it was asked to be, takes the batch for committed, and sends the write round again.
        if (res.status === 200 && (!mustFail(run) || expected <= lo)) {
          if (!model.uncertain) expect(body.lastReadSeq).toBe(expected);
          model.read.set(from.user, moved);
        } else if (refusal(run, res.status, body.error?.code) === "unknown") {
          model.read.set(from.user, [lo, moved[1]]);
        }
        return;
      }
      const socket = from.socket;
      const start = socket.frames.length;
      socket.send({ type: "read", seq });
      const outcome = await poll(async () => {
        if (socket.frames.slice(start).some((f) => f.type === "error" && f.code === "unavailable")) return "refused";
        const row = await env.DB.prepare(
          "SELECT last_read_seq AS r FROM participants WHERE conversation_id = ? AND user_id = ?",
        )
          .bind(conversationId, from.user)
          .first<{ r: number }>();
        // Stored, and no failure is armed, or it struck this read and the room found the read committed anyway.
        const spent = !model.armed || faultStats.fired > run.firedAtArm;
        return (row?.r ?? -1) >= expected && spent ? "stored" : undefined;
      }, "the read marker");
      if (outcome === "refused") {
        if (refusal(run, 503, "unavailable") === "unknown") model.read.set(from.user, [lo, moved[1]]);
      } else {
        model.read.set(from.user, moved);
      }
      return;
    }
    case "edit": {
      const seqs = stored();
      if (seqs.length === 0) return;
      const seq = seqs[cmd.pick % seqs.length] as number;
      const sent = model.bySeq.get(seq) as Sent;
      const state = model.current.get(seq);
      if (!state) throw new Error("unreachable");
      const actor = cmd.byOther ? (users.find((u) => u !== sent.user) as string) : sent.user;
      const content = `${CONTENTS[cmd.text]?.slice(0, 100)} (edited ${model.step})`;
      const res = await call(`/v1/conversations/${conversationId}/messages/${seq}`, {
        method: "PATCH",
        as: actor,
        body: { content },
      });
      const body = (await res.json()) as MessageDto & { error?: { code: string } };
      if (res.status === 503 || mustFail(run)) {
        // The armed failure takes any write, even one that would be refused.
        if (refusal(run, res.status, body.error?.code) === "unknown" && actor === sent.user && !state.deleted)
          state.versions.add(content);
        return;
      }
      if (actor !== sent.user || state.deleted) {
        expect(res.status, JSON.stringify(body)).toBe(403);
        return;
      }
      expect(res.status, JSON.stringify(body)).toBe(200);
      expect(body).toMatchObject({ seq, id: sent.id, content });
      Object.assign(state, { content, changedAt: model.step });
      state.versions.add(content);
      return;
    }
    case "delete": {
      const seqs = stored();
      if (seqs.length === 0) return;
      const seq = seqs[cmd.pick % seqs.length] as number;
      const sent = model.bySeq.get(seq) as Sent;
      const state = model.current.get(seq);
      if (!state) throw new Error("unreachable");
      const others = users.filter((u) => u !== sent.user && u !== users[0]);
      const actor = cmd.actor === "sender" ? sent.user : cmd.actor === "owner" ? (users[0] as string) : others[0];
      if (!actor) return;
      const res = await call(`/v1/conversations/${conversationId}/messages/${seq}`, { method: "DELETE", as: actor });
      const body = (await res.json()) as MessageDto & { error?: { code: string } };
      const allowed = actor === sent.user || actor === users[0];
      if (res.status === 503 || mustFail(run)) {
        if (refusal(run, res.status, body.error?.code) === "unknown" && allowed) state.versions.add("");
        return;
      }
      if (!allowed) {
        expect(res.status, JSON.stringify(body)).toBe(403);
        return;
      }
      expect(res.status, JSON.stringify(body)).toBe(200);
      expect(body).toMatchObject({ seq, id: sent.id, content: "", deletedAt: expect.any(String) });
      if (!state.deleted) Object.assign(state, { content: "", deleted: true, changedAt: model.step });
      state.versions.add("");
      return;
    }
  }
}

interface Row {
  id: string;
  seq: number;
  senderId: string;
  localId: string | null;
  content: string;
  deletedAt: number | null;
}

async function restHistory(conversationId: string, as: string): Promise<MessageDto[]> {
  const all: MessageDto[] = [];
  let after = 0;
  for (;;) {
    const res = await call(`/v1/conversations/${conversationId}/messages?after=${after}&limit=100`, { as });
    expect(res.status).toBe(200);
    const page = (await res.json()) as { messages: MessageDto[]; hasMore: boolean };
    all.push(...page.messages);
    if (!page.hasMore) return all;
    after = page.messages.at(-1)?.seq ?? after;
  }
}

/** Every guarantee, checked once the sequence is over. */
async function verify(run: Run) {
  const { model, clients, users, conversationId } = run;
  // A last message through the room. Frames come in order, so a socket that has it had its chance at
  // everything before it: what it lacks then, it was never sent.
  for (let attempt = 0; ; attempt++) {
    const from = clients[attempt % USERS] as Client;
    const fence = newSend(run, from, 0);
    for (let retry = 0; retry < 3 && fence.state !== "stored"; retry++)
      await sendOne(run, from, fence, "rest", retry === 0);
    if (fence.state === "stored") break;
    if (attempt >= 2 * USERS) throw new Error("no user could send the last message");
    if (attempt % USERS === USERS - 1) await new Promise((r) => setTimeout(r, 1_000)); // the send buckets refill
  }
  const fenceSeq = knownLastSeq(model);
  for (const c of clients) {
    if (!c.socket || c.socket.closed) await open(run, c, false);
    const socket = c.socket as TestSocket;
    await socket.until(
      () => {
        absorb(c);
        return c.delivered.has(fenceSeq);
      },
      WAIT_MS,
      `${c.user} to get the last message`,
    );
    absorb(c);
  }
  const { results: rows } = await env.DB.prepare(
    `SELECT id, seq, sender_id AS senderId, local_id AS localId, content, deleted_at AS deletedAt
     FROM messages WHERE conversation_id = ? ORDER BY seq`,
  )
    .bind(conversationId)
    .all<Row>();
  const n = rows.length;

  // seq: 1..n, no gap, no duplicate.
  expect(
    rows.map((r) => r.seq),
    "seq gap-free",
  ).toEqual(Array.from({ length: n }, (_, i) => i + 1));

  // No acknowledged message lost, none duplicated, none that nobody sent, nothing stored for a refusal.
  const byKey = new Map(rows.map((r) => [key(r.senderId, r.localId ?? ""), r]));
  expect(byKey.size, "one row per (sender, localId)").toBe(n);
  const sentKeys = new Set(model.sends.map((s) => key(s.user, s.localId)));
  for (const r of rows) expect(sentKeys.has(key(r.senderId, r.localId ?? "")), `row ${r.seq} was sent`).toBe(true);
  for (const s of model.sends) {
    const row = byKey.get(key(s.user, s.localId));
    if (s.state === "stored") {
      expect(row, `acknowledged ${s.localId} is stored`).toBeDefined();
      expect({ id: row?.id, seq: row?.seq }).toEqual({ id: s.id, seq: s.seq });
    } else if (s.state === "refused") {
      expect(row, `refused ${s.localId} (429, or 503 before commit) is not stored`).toBeUndefined();
    }
  }

  // Contents follow the acknowledged edits and deletes.
  for (const r of rows) {
    const state = model.current.get(r.seq);
    if (!state) continue; // stored behind a lost reply: not in the model
    const visible = r.deletedAt === null ? r.content : "";
    if (model.uncertain) expect(state.versions.has(visible), `content of ${r.seq}`).toBe(true);
    else expect(visible, `content of ${r.seq}`).toBe(state.content);
  }

  // REST history is D1, page after page.
  const history = await restHistory(conversationId, users[1] as string);
  expect(history.map((m) => [m.seq, m.id, m.senderId, m.localId, m.content])).toEqual(
    rows.map((r) => [r.seq, r.id, r.senderId, r.localId, r.deletedAt === null ? r.content : ""]),
  );
  const conversation = await call(`/v1/conversations/${conversationId}`, { as: users[0] as string });
  expect(((await conversation.json()) as { lastSeq: number }).lastSeq).toBe(n);

  // Every socket client, reconnecting where it must, was given every message exactly once, in one order.
  for (const c of clients) {
    expect(c.violations, `frames of ${c.user}`).toEqual([]);
    expect(
      [...c.delivered.entries()].sort((a, b) => a[0] - b[0]),
      `what ${c.user} was given`,
    ).toEqual(rows.map((r) => [r.seq, r.id]));
    for (const r of rows) {
      const state = model.current.get(r.seq);
      const seen = c.content.get(r.seq);
      const visible = r.deletedAt === null ? r.content : "";
      // A change made while this connection was open reached it; older ones it may have missed (no replay).
      if (state && c.connectedAt < state.changedAt && !model.uncertain)
        expect(seen, `content of ${r.seq} at ${c.user}`).toBe(visible);
      else if (state) expect(state.versions.has(seen ?? ""), `content of ${r.seq} at ${c.user}`).toBe(true);
    }
    figures.messagesChecked += rows.length;
  }

  // Read markers moved as acknowledged, never back.
  for (const user of users) {
    const row = await env.DB.prepare(
      "SELECT last_read_seq AS r FROM participants WHERE conversation_id = ? AND user_id = ?",
    )
      .bind(conversationId, user)
      .first<{ r: number }>();
    const [lo, hi] = model.read.get(user) ?? [0, 0];
    expect(row?.r, `read marker of ${user}`).toBeGreaterThanOrEqual(lo);
    // A lost reply may have stored a message the model never heard of, which moved its sender's marker.
    if (run.mode === "before-commit") expect(row?.r, `read marker of ${user}`).toBeLessThanOrEqual(hi);
  }
}

async function runSequence(cmds: Cmd[], mode: FaultMode) {
  const users = Array.from({ length: USERS }, (_, i) => uniqueUser(`m${i}`));
  const conv = await createConversation(users[0] as string, users.slice(1));
  const model: Model = {
    sends: [],
    bySeq: new Map(),
    current: new Map(),
    read: new Map(),
    armed: false,
    step: 0,
    uncertain: false,
  };
  const clients: Client[] = CLIENTS.map((u) => ({
    user: users[u] as string,
    socket: undefined,
    cursor: 0,
    delivered: new Map(),
    via: new Map(),
    content: new Map(),
    connectedAt: 0,
    since: 0,
    lastMessageSeq: 0,
    fresh: new Set(),
    claimed: new Set(),
    violations: [],
  }));
  const run: Run = {
    model,
    clients,
    users,
    conversationId: conv.id,
    mode,
    localIds: 0,
    inBurst: false,
    firedInBurst: false,
    firedAtArm: 0,
  };
  figures.sequences++;
  try {
    for (const c of clients) await open(run, c, false);
    for (const cmd of cmds) await runCommand(run, cmd);
    await verify(run);
  } finally {
    for (const c of clients) if (c.socket && !c.socket.closed) c.socket.close();
  }
}

describe("model-based: random command sequences keep every guarantee", () => {
  afterAll(() => reportFigures("model", { ...figures, faultsArmed: faultStats.armed, faultsFired: faultStats.fired }));

  it("with D1 failing before commit", { timeout: 240_000 }, async () => {
    const { seed, numRuns } = propertyRuns(20261125, MODEL_CI_RUNS);
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 4, maxLength: 28 }), (cmds) =>
        runSequence(cmds, "before-commit"),
      ),
      { seed, numRuns },
    );
  });

  it("with D1 losing the reply after it committed", { timeout: 240_000 }, async () => {
    const { seed, numRuns } = propertyRuns(20261126, 15);
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 4, maxLength: 20 }), (cmds) => runSequence(cmds, "after-commit")),
      { seed, numRuns },
    );
  });
});
