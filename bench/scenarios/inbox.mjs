// The inbox: one Durable Object per user (src/inbox/), fed by each room's outbox in its alarm, at most once per
// PUMP_COALESCE_MS (250 ms) per room and, for a room of many members, at most 200 calls per second in all
// (feedSpacingMs of src/domain/inbox.ts: 500 ms for 100 members), one `deliver` call per member inbox per
// feed. Two shapes:
//
// 1. A watcher in `conversations` conversations of 2 holds one inbox socket (opened with a ticket, before the
//    conversations exist); the other member of each sends over its conversation socket, `rate` msg/s in all,
//    open loop, spread evenly over the conversations. Per acked message: the time from its ack to the first
//    `conversation` frame of the inbox socket (as received) whose `conversation.lastSeq` is at or past the
//    message's seq; the inbox frames per message; the calls into the watcher's inbox per second (the growth of
//    its `GET /v1/inbox` version, which grows by 1 per change applied).
// 2. A group of `members` (the most a conversation takes, owner included), `senders` of them sending `rate`
//    msg/s into it over their conversation sockets. The room-to-inbox calls per second: the growth of every
//    member's version over the phase; and, at one member's inbox socket, the frames per message and the time
//    from an ack to the frame showing it.
//
// The phase of each is from its first scheduled send to the last inbox frame that showed its last message,
// at the watched socket: the span in which the feeds of its messages were applied.
import WebSocket from "ws";
import { closeAll, connectAll, now, users } from "../lib/clients.mjs";
import { firstAtLeast, histogram, openLoop, percentiles, Run, spreadOver } from "../lib/load.mjs";
import { cpuMeter, round, sleep } from "../lib/proc.mjs";
import { startProfile } from "../lib/profiler.mjs";
import { mergeChecks, sumCpu } from "./realtime.mjs";

/** How long the inbox socket may take, after the last ack, to show what it has not shown yet. */
const TAIL_MS = 10_000;
/** Above this ack p99 the server did not keep up with the rate: the run says so. */
const KEPT_UP_ACK_P99_MS = 500;
/** A room feeds its members' inboxes at most this often (PUMP_COALESCE_MS of src/room/outbox.ts, copied)... */
const PUMP_COALESCE_MS = 250;
/** ...and makes at most this many inbox calls per second (MAX_INBOX_CALLS_PER_SECOND of src/domain/inbox.ts). */
const MAX_INBOX_CALLS_PER_SECOND = 200;
/** The design's bound on one member's calls per second in a room of `members` (feedSpacingMs, copied). */
const boundPerMember = (/** @type {number} */ members) =>
  1000 / Math.max(PUMP_COALESCE_MS, Math.ceil((members * 1000) / MAX_INBOX_CALLS_PER_SECOND));
/** How many `GET /v1/inbox` at a time when reading every member's version. */
const READ_CONCURRENCY = 10;

/**
 * @typedef {object} InboxSizes
 * @property {{ conversations: number, rate: number, warmupMs: number, durationMs: number }} watcher
 * @property {{ members: number, senders: number, rate: number, warmupMs: number, durationMs: number }} group
 */

/**
 * @param {import("../run.mjs").Context} ctx
 * @param {InboxSizes} sizes
 */
export async function inboxScenario(ctx, sizes) {
  const watcher = await watcherInMany(ctx, sizes.watcher);
  const group = await bigGroup(ctx, sizes.group);
  // The checks are each part's (`watcher.checks`, `group.checks`); the CPU is both parts'.
  return { watcher, group, coalesceMs: PUMP_COALESCE_MS, cpu: sumCpu([watcher.cpu, group.cpu]) };
}

/**
 * One inbox socket: `inbox_ready` first, then `conversation` frames, each kept as the conversation's lastSeq
 * growing over time. Counts frames by type, version gaps (one socket sees every change: version + 1 each),
 * lastSeq going back, error frames and `pong`s.
 */
class InboxSocket {
  /** @type {Record<string, number>} */
  frames = {};
  /** @type {any} */
  ready = null;
  version = 0;
  versionGaps = 0;
  seqBackwards = 0;
  pongs = 0;
  /** @type {any[]} */
  errors = [];
  /** Per conversation id: when the socket saw its lastSeq grow, and to what. */
  /** @type {Map<string, { at: number[], seq: number[] }>} */
  seen = new Map();
  /** Per conversation id: the latest `conversation` frame's Conversation. */
  /** @type {Map<string, any>} */
  latest = new Map();
  /** The latest `conversation` or `conversation_removed` frame, with when it came. */
  /** @type {any} */
  lastFrame = null;
  lastFrameAt = 0;
  /** @type {Promise<InboxSocket>} */
  opened;
  /** @type {Promise<void>} */
  closed;

  /** @param {{ url: string, headers: Record<string, string> }} endpoint */
  constructor(endpoint) {
    this.ws = new WebSocket(endpoint.url, { headers: endpoint.headers, perMessageDeflate: false });
    /** @type {(() => void) | undefined} */
    let ready;
    this.opened = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no inbox_ready within 15 s")), 15_000);
      this.ws.once("unexpected-response", (_req, res) => {
        let text = "";
        res.on("data", (/** @type {Buffer} */ chunk) => {
          text += chunk.toString();
        });
        res.on("end", () => reject(new Error(`inbox upgrade refused: ${res.statusCode} ${text}`)));
      });
      this.ws.once("error", reject);
      this.ws.once("close", (code) => reject(new Error(`inbox socket closed before inbox_ready: ${code}`)));
      ready = () => {
        clearTimeout(timer);
        resolve(this);
      };
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => this.ws.once("close", () => resolve()));
    this.ws.on("error", () => {});
    this.ws.on("message", (data) => this.#onMessage(data.toString(), () => ready?.()));
  }

  /**
   * @param {string} text
   * @param {() => void} onReady
   */
  #onMessage(text, onReady) {
    const at = now();
    if (text === "pong") {
      this.pongs++;
      return;
    }
    const frame = JSON.parse(text);
    this.frames[frame.type] = (this.frames[frame.type] ?? 0) + 1;
    if (frame.type === "inbox_ready") {
      this.ready = frame;
      this.version = frame.version;
      onReady();
      return;
    }
    if (frame.type === "error") {
      if (this.errors.length < 5) this.errors.push(frame);
      return;
    }
    if (frame.type !== "conversation" && frame.type !== "conversation_removed") return;
    if (frame.version !== this.version + 1) this.versionGaps++;
    this.version = Math.max(this.version, frame.version);
    this.lastFrame = frame;
    this.lastFrameAt = at;
    if (frame.type !== "conversation") return;
    const conversation = frame.conversation;
    this.latest.set(conversation.id, conversation);
    let s = this.seen.get(conversation.id);
    if (!s) {
      s = { at: [], seq: [] };
      this.seen.set(conversation.id, s);
    }
    const before = s.seq.at(-1) ?? -1;
    if (conversation.lastSeq < before) this.seqBackwards++;
    if (conversation.lastSeq > before) {
      s.at.push(at);
      s.seq.push(conversation.lastSeq);
    }
  }

  /** The lastSeq this socket last saw of a conversation (-1: never shown). */
  lastSeqOf(/** @type {string} */ conversationId) {
    return this.seen.get(conversationId)?.seq.at(-1) ?? -1;
  }

  /** When the socket first showed the conversation at `seq` or later, or null. */
  firstAtOrPast(/** @type {string} */ conversationId, /** @type {number} */ seq) {
    const s = this.seen.get(conversationId);
    if (!s) return null;
    // The lastSeqs kept only grow.
    const i = firstAtLeast(s.seq, seq);
    return i === s.seq.length ? null : /** @type {number} */ (s.at[i]);
  }

  /** Sends the literal `ping` and waits (bounded) for the runtime's `pong`. */
  async ping(timeoutMs = 5000) {
    const before = this.pongs;
    this.ws.send("ping");
    const deadline = now() + timeoutMs;
    while (this.pongs === before && now() < deadline) await sleep(10);
    return this.pongs > before;
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000);
    const timer = sleep(15_000);
    return Promise.race([this.closed, timer]).then(() => {
      if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
    });
  }
}

/** The user's `GET /v1/inbox`: version and unread totals. */
/**
 * What an inbox socket that only watched changes must not have seen: a version skipped, a lastSeq going
 * back, a resync or removal, an error frame, or no answer to its ping.
 * @param {{ versionGaps: number, seqBackwards: number, frames: Record<string, number>, errors: unknown[] }} socket
 * @param {boolean} pong
 */
function socketFailures(socket, pong) {
  const failures = [];
  if (socket.versionGaps > 0) failures.push(`${socket.versionGaps} version gaps at the inbox socket`);
  if (socket.seqBackwards > 0) failures.push(`${socket.seqBackwards} frames with an older lastSeq`);
  if ((socket.frames.resync ?? 0) + (socket.frames.conversation_removed ?? 0) > 0)
    failures.push("resync or conversation_removed frames");
  if (socket.errors.length > 0) failures.push(`error frames: ${JSON.stringify(socket.errors)}`);
  if (!pong) failures.push("no pong to ping");
  return failures;
}

async function totals(/** @type {import("../run.mjs").Context} */ ctx, /** @type {string} */ user) {
  const res = await ctx.product.api("GET", "/v1/inbox", user);
  if (res.status !== 200) throw new Error(`GET /v1/inbox: ${res.status} ${JSON.stringify(res.body)}`);
  return /** @type {{ version: number, unreadTotal: number, unreadConversations: number }} */ (res.body);
}

/** `GET /v1/inbox` of every user, READ_CONCURRENCY at a time, in the users' order. */
async function totalsOfAll(/** @type {import("../run.mjs").Context} */ ctx, /** @type {string[]} */ people) {
  /** @type {{ version: number, unreadTotal: number, unreadConversations: number }[]} */
  const out = new Array(people.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(READ_CONCURRENCY, people.length) }, async () => {
      while (next < people.length) {
        const i = next++;
        out[i] = await totals(ctx, /** @type {string} */ (people[i]));
      }
    }),
  );
  return out;
}

/** Waits until `done()` or the timeout; returns whether it is done. */
async function until(/** @type {() => boolean} */ done, /** @type {number} */ timeoutMs) {
  const deadline = now() + timeoutMs;
  while (!done() && now() < deadline) await sleep(20);
  return done();
}

/** Acks: conversation, seq, when; at most `capacity`. */
function ackLog(/** @type {number} */ capacity) {
  return {
    conversation: new Int32Array(capacity),
    seq: new Float64Array(capacity),
    at: new Float64Array(capacity),
    n: 0,
    /** @param {number} conversation @param {number} seq @param {number} at */
    push(conversation, seq, at) {
      if (this.n >= capacity) return;
      const k = this.n++;
      this.conversation[k] = conversation;
      this.seq[k] = seq;
      this.at[k] = at;
    },
  };
}

/**
 * Per ack, the time to the first inbox frame showing it: a histogram (µs), the share within 1 s, and how many
 * no frame showed.
 * @param {ReturnType<typeof ackLog>} acks
 * @param {InboxSocket} socket
 * @param {string[]} rooms conversation ids, by the acks' conversation index
 */
function frameLatency(acks, socket, rooms) {
  const h = histogram();
  let unseen = 0;
  let within = 0;
  for (let k = 0; k < acks.n; k++) {
    const room = /** @type {string} */ (rooms[/** @type {number} */ (acks.conversation[k])]);
    const at = socket.firstAtOrPast(room, /** @type {number} */ (acks.seq[k]));
    if (at === null) {
      unseen++;
      continue;
    }
    const ms = Math.max(0, at - /** @type {number} */ (acks.at[k]));
    h.recordValue(Math.round(ms * 1000));
    if (ms <= 1000) within++;
  }
  return {
    latencyMs: percentiles(h),
    withinOneSecondPercent: acks.n === 0 ? 0 : round((100 * within) / acks.n, 2),
    unseen,
  };
}

/**
 * Part 1: a watcher in many conversations of 2, one inbox socket, the other members sending.
 * @param {import("../run.mjs").Context} ctx
 * @param {InboxSizes["watcher"]} options
 */
async function watcherInMany(ctx, { conversations, rate, warmupMs, durationMs }) {
  const target = ctx.product.ours;
  const api = ctx.product.api;
  const watcher = `ib-watcher-${ctx.runId}`;
  const senders = users(`ib-sender-${ctx.runId}`, conversations);
  /** @type {Record<string, any>} */
  const result = { conversations, rate, ratePerConversation: rate / conversations, warmupMs, durationMs };

  // The inbox socket first, through a ticket (the browser's way): it sees every conversation being created.
  const issued = await api("POST", "/v1/inbox/ticket", watcher);
  if (issued.status !== 201) throw new Error(`POST /v1/inbox/ticket: ${issued.status} ${JSON.stringify(issued.body)}`);
  const ticket = encodeURIComponent(/** @type {{ ticket: string }} */ (issued.body).ticket);
  const socket = new InboxSocket({ url: `${ctx.server.ws}/v1/inbox/ws?ticket=${ticket}`, headers: {} });
  /** @type {import("../lib/clients.mjs").Client[]} */
  let clients = [];
  try {
    await socket.opened;
    /** @type {string[]} */
    const rooms = new Array(conversations);
    let made = 0;
    const createStart = now();
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (made < conversations) {
          const i = made++;
          // Each sender creates its own: one user creating 100 at once is over the creation limit.
          rooms[i] = await target.room([/** @type {string} */ (senders[i]), watcher]);
        }
      }),
    );
    const created = now();
    // Each new conversation reaches the inbox through its room's feed.
    const allShown = await until(() => rooms.every((room) => socket.latest.has(room)), TAIL_MS);
    result.creation = {
      seconds: round((created - createStart) / 1000, 2),
      shownInInbox: rooms.filter((room) => socket.latest.has(room)).length,
      // From the last creation's response to the last conversation's first frame.
      allShownAfterMs: allShown
        ? Math.max(0, Math.round(Math.max(...rooms.map((r) => socket.seen.get(r)?.at[0] ?? 0)) - created))
        : null,
    };
    clients = await connectAll(
      target,
      rooms.map((room, i) => ({ room, user: /** @type {string} */ (senders[i]) })),
    );

    // Warm-up at the same rate, not measured; then a second for its feeds to be done.
    const warmCount = Math.round((rate * warmupMs) / 1000);
    const warm = clients.map((c) => new Run([c], Math.ceil(warmCount / conversations) + 1));
    await spreadOver(warm, { rate, count: warmCount, offset: 0 });
    await Promise.all(warm.map((run) => run.settle()));
    const warmChecks = warm.map((run) => run.finish());
    await sleep(1000);

    const count = Math.round((rate * durationMs) / 1000);
    const runs = clients.map((c) => new Run([c], Math.ceil(count / conversations) + 1));
    const acks = ackLog(count);
    runs.forEach((run, conversation) => {
      run.onAck = (_client, _index, frame, at) => acks.push(conversation, frame.message.seq, at);
    });
    const before = await totals(ctx, watcher);
    const framesBefore = socket.frames.conversation ?? 0;
    const meter = cpuMeter(target.serverPids);
    const profiler = ctx.profile ? await startProfile(ctx.server.inspectorPort) : null;
    // Where the warm-up stopped: the measured messages go on to the next conversations.
    const phaseStart = await spreadOver(runs, { rate, count, offset: warmCount % conversations });
    const profile = await profiler?.stop("inbox-watcher");
    if (profile) ctx.log(`  profile: ${profile.path}`);
    const settled = (await Promise.all(runs.map((run) => run.settle()))).every(Boolean);
    // Every conversation's last seq (warm-up included), as its sender was acked.
    const lastSeqs = clients.map((c) => c.lastSeq);
    const caughtUp = await until(() => rooms.every((room, i) => socket.lastSeqOf(room) >= (lastSeqs[i] ?? 0)), TAIL_MS);
    const cpu = meter();
    const phaseSeconds = (socket.lastFrameAt - phaseStart) / 1000;
    const after = await totals(ctx, watcher);
    const pong = await socket.ping();

    const frames = (socket.frames.conversation ?? 0) - framesBefore;
    const growth = after.version - before.version;
    const { latencyMs, withinOneSecondPercent, unseen } = frameLatency(acks, socket, rooms);
    // W never reads: each conversation's unread is its last seq.
    const unreadExpected = lastSeqs.reduce((s, x) => s + x, 0);
    const lastFrameUnread = socket.lastFrame?.unreadTotal ?? null;
    const notShownAtLast = rooms.filter((room, i) => socket.lastSeqOf(room) !== lastSeqs[i]).length;
    const wrongUnreadCount = rooms.filter(
      (room, i) => (socket.latest.get(room)?.unreadCount ?? -1) !== (lastSeqs[i] ?? 0),
    ).length;
    const ackLatency = histogram();
    const lag = histogram();
    for (const run of runs) {
      ackLatency.add(run.ackLatency);
      lag.add(run.lag);
    }
    /** @type {string[]} */
    const failures = [];
    if (result.creation.shownInInbox !== conversations)
      failures.push(`${conversations - result.creation.shownInInbox} created conversations not shown`);
    if (unseen > 0) failures.push(`${unseen} messages never shown by an inbox frame`);
    if (notShownAtLast > 0)
      failures.push(`${notShownAtLast} conversations whose last frame's lastSeq is not their last seq`);
    if (lastFrameUnread !== unreadExpected)
      failures.push(`last frame's unreadTotal ${lastFrameUnread}, expected ${unreadExpected}`);
    if (after.unreadTotal !== unreadExpected)
      failures.push(`GET /v1/inbox unreadTotal ${after.unreadTotal}, expected ${unreadExpected}`);
    if (wrongUnreadCount > 0) failures.push(`${wrongUnreadCount} conversations whose last unreadCount is not lastSeq`);
    if (frames !== growth) failures.push(`${frames} frames but the version grew by ${growth}`);
    failures.push(...socketFailures(socket, pong));

    Object.assign(result, {
      messages: count,
      acked: acks.n,
      frameLatencyMs: latencyMs,
      withinOneSecondPercent,
      unseen,
      inboxFrames: frames,
      framesPerMessage: count === 0 ? null : round(frames / count, 3),
      versionGrowth: growth,
      phaseSeconds: round(phaseSeconds, 2),
      callsPerSecond: phaseSeconds > 0 ? round(growth / phaseSeconds, 2) : null,
      unread: { expected: unreadExpected, lastFrame: lastFrameUnread, rest: after.unreadTotal },
      ackLatencyMs: percentiles(ackLatency),
      serverKeptUp: ackLatency.getValueAtPercentile(99) <= KEPT_UP_ACK_P99_MS * 1000,
      generatorLagMs: percentiles(lag),
      settled,
      caughtUp,
      framesReceived: socket.frames,
      cpu,
      profile,
      checks: inboxChecks(mergeChecks([...warmChecks, ...runs.map((run) => run.finish())]), failures),
    });
    ctx.log(
      `  1 user in ${conversations} conversations, ${rate} msg/s: ack to inbox frame p50 ${latencyMs.p50} p99 ${latencyMs.p99} max ${latencyMs.max} ms, ${withinOneSecondPercent} % within 1 s, ${unseen} unseen; ${result.framesPerMessage} frames/message, ${result.callsPerSecond} calls/s into the inbox (ack p99 ${result.ackLatencyMs.p99} ms)`,
    );
    for (const failure of failures) ctx.log(`  CHECK FAILED: ${failure}`);
  } finally {
    await closeAll(clients);
    await socket.close();
  }
  return result;
}

/**
 * Part 2: one conversation of `members`, `senders` of them sending over their sockets; every member's version
 * read before and after, one member's inbox socket watched.
 * @param {import("../run.mjs").Context} ctx
 * @param {InboxSizes["group"]} options
 */
async function bigGroup(ctx, { members, senders: senderCount, rate, warmupMs, durationMs }) {
  const target = ctx.product.ours;
  const people = users(`ib-group-${ctx.runId}`, members);
  const watched = /** @type {string} */ (people.at(-1));
  /** @type {Record<string, any>} */
  const result = { members, senders: senderCount, rate, warmupMs, durationMs };
  const room = await target.room(people);
  const socket = new InboxSocket({
    url: `${ctx.server.ws}/v1/inbox/ws`,
    headers: { Authorization: `Bearer ${await ctx.product.tokens(watched)}` },
  });
  /** @type {import("../lib/clients.mjs").Client[]} */
  let clients = [];
  try {
    await socket.opened;
    clients = await connectAll(
      target,
      people.slice(0, senderCount).map((user) => ({ room, user })),
    );
    const warm = new Run(clients, Math.max(1, Math.round((rate * warmupMs) / 1000)));
    await openLoop(warm, { senders: clients, rate, count: warm.capacity });
    await warm.settle();
    const warmChecks = warm.finish();
    await sleep(1000);

    const count = Math.round((rate * durationMs) / 1000);
    const run = new Run(clients, count);
    const acks = ackLog(count);
    run.onAck = (_client, _index, frame, at) => acks.push(0, frame.message.seq, at);
    const before = await totalsOfAll(ctx, people);
    const framesBefore = socket.frames.conversation ?? 0;
    const meter = cpuMeter(target.serverPids);
    const profiler = ctx.profile ? await startProfile(ctx.server.inspectorPort) : null;
    const phaseStart = now() + 5;
    await openLoop(run, { senders: clients, rate, count });
    const profile = await profiler?.stop("inbox-group");
    if (profile) ctx.log(`  profile: ${profile.path}`);
    const settled = await run.settle();
    const lastSeq = Math.max(...clients.map((c) => c.lastSeq));
    const caughtUp = await until(() => socket.lastSeqOf(room) >= lastSeq, TAIL_MS);
    const cpu = meter();
    const phaseSeconds = (socket.lastFrameAt - phaseStart) / 1000;
    // The members' inboxes are fed together: once the watched one shows the last seq, the others have it or
    // are about to. Read until every non-sender's unread is the last seq (they never read), bounded.
    const nonSenders = people.slice(senderCount).map((_, i) => i + senderCount);
    /** @type {{ version: number, unreadTotal: number, unreadConversations: number }[]} */
    let after = [];
    let reads = 0;
    const readUntil = now() + 5000;
    do {
      if (reads > 0) await sleep(500);
      after = await totalsOfAll(ctx, people);
      reads++;
    } while (nonSenders.some((i) => after[i]?.unreadTotal !== lastSeq) && now() < readUntil);
    const pong = await socket.ping();

    const growth = people.map((_, i) => (after[i]?.version ?? 0) - (before[i]?.version ?? 0));
    const sorted = [...growth].sort((a, b) => a - b);
    const total = growth.reduce((s, g) => s + g, 0);
    const perSecond = (/** @type {number} */ g) => (phaseSeconds > 0 ? round(g / phaseSeconds, 2) : null);
    const frames = (socket.frames.conversation ?? 0) - framesBefore;
    const watchedGrowth = growth.at(-1) ?? 0;
    const { latencyMs, withinOneSecondPercent, unseen } = frameLatency(acks, socket, [room]);
    const wrongUnread = nonSenders.filter((i) => after[i]?.unreadTotal !== lastSeq).length;
    const last = socket.latest.get(room);
    /** @type {string[]} */
    const failures = [];
    if (unseen > 0) failures.push(`${unseen} messages never shown at the watched member's inbox socket`);
    if (socket.lastSeqOf(room) !== lastSeq)
      failures.push(`watched member's last frame has lastSeq ${socket.lastSeqOf(room)}, expected ${lastSeq}`);
    if (last?.unreadCount !== lastSeq || socket.lastFrame?.unreadTotal !== lastSeq)
      failures.push(
        `watched member's last frame unread ${last?.unreadCount}/${socket.lastFrame?.unreadTotal}, expected ${lastSeq}`,
      );
    if (wrongUnread > 0) failures.push(`${wrongUnread} non-sending members whose unreadTotal is not ${lastSeq}`);
    if (frames !== watchedGrowth)
      failures.push(`${frames} frames at the watched member but its version grew by ${watchedGrowth}`);
    failures.push(...socketFailures(socket, pong));

    Object.assign(result, {
      messages: count,
      acked: acks.n,
      phaseSeconds: round(phaseSeconds, 2),
      versionGrowth: { total, min: sorted[0] ?? 0, median: sorted[sorted.length >> 1] ?? 0, max: sorted.at(-1) ?? 0 },
      callsPerSecond: perSecond(total),
      callsPerMemberPerSecond: {
        min: perSecond(sorted[0] ?? 0),
        median: perSecond(sorted[sorted.length >> 1] ?? 0),
        max: perSecond(sorted.at(-1) ?? 0),
      },
      designBoundPerMember: boundPerMember(members),
      watchedFrames: frames,
      watchedFramesPerMessage: count === 0 ? null : round(frames / count, 4),
      messagesPerFrame: frames === 0 ? null : round(count / frames, 1),
      watchedFrameLatencyMs: latencyMs,
      watchedWithinOneSecondPercent: withinOneSecondPercent,
      unseen,
      afterReads: reads,
      ackLatencyMs: percentiles(run.ackLatency),
      serverKeptUp: run.ackLatency.getValueAtPercentile(99) <= KEPT_UP_ACK_P99_MS * 1000,
      generatorLagMs: percentiles(run.lag),
      settled,
      caughtUp,
      framesReceived: socket.frames,
      cpu,
      profile,
      checks: inboxChecks(mergeChecks([warmChecks, run.finish()]), failures),
    });
    ctx.log(
      `  ${members}-member group, ${rate} msg/s: ${result.callsPerSecond} room-to-inbox calls/s (per member ${result.callsPerMemberPerSecond.min}-${result.callsPerMemberPerSecond.max}), ${frames} frames for ${count} messages at one member (ack to frame p99 ${latencyMs.p99} ms; ack p99 ${result.ackLatencyMs.p99} ms)`,
    );
    for (const failure of failures) ctx.log(`  CHECK FAILED: ${failure}`);
  } finally {
    await closeAll(clients);
    await socket.close();
  }
  return result;
}

/**
 * The conversation sockets' delivery and order checks with the inbox's own: what failed, in words.
 * @param {ReturnType<typeof mergeChecks>} delivery
 * @param {string[]} failures
 */
function inboxChecks(delivery, failures) {
  return { ...delivery, inboxFailures: failures, ok: delivery.ok && failures.length === 0 };
}
