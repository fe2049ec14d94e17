// The results as the issue's targets (met or not) and as a markdown table.

const fmt = (/** @type {unknown} */ v) =>
  v === undefined || v === null ? "—" : typeof v === "number" ? v.toLocaleString("en-US") : String(v);
const lat = (/** @type {any} */ l) => (l ? `${l.p50} / ${l.p99} / ${l.p999}` : "—");
const mark = (/** @type {boolean | null} */ met) => (met === null ? "not run" : met ? "met" : "**missed**");

/**
 * The issue's targets, each with what was measured.
 * @param {{ results: Record<string, any> }} report
 */
export function targets({ results }) {
  const out = [];
  // The targets of issue 11 (messages in the room): ratios to the floor measured in the same run.
  const ratioTarget = (/** @type {string} */ name, /** @type {string} */ target, /** @type {number} */ min) => {
    const r = results[name];
    const ok = r && !r.error && r.oursOverFloor !== null && r.ours?.checks?.ok;
    out.push({
      target: `${target} ≥ ${min}× the floor`,
      measured: r?.oursOverFloor ?? null,
      met: r && !r.error ? Boolean(ok && r.oursOverFloor >= min) : null,
    });
  };
  ratioTarget("throughput-2", "durable sends/s into one conversation, 2 clients", 0.8);
  ratioTarget("conversations-100", "durable messages/s over 100 conversations at once", 0.6);
  const fan = results["fanout-100x100"];
  const fanRatio =
    fan?.ours && fan.floor ? Math.round((fan.ours.latencyMs.p99 / fan.floor.latencyMs.p99) * 100) / 100 : null;
  out.push({
    target: "fan-out 100 sockets × 100 msg/s: p99 ≤ 1.5× the floor's p99, 100 % delivered",
    measured:
      fanRatio !== null
        ? `p99 ${fan.ours.latencyMs.p99} ms = ${fanRatio}× the floor's, ${fan.ours.checks.deliveredPercent} % delivered`
        : null,
    met: fanRatio !== null ? fanRatio <= 1.5 && fan.ours.checks.ok : null,
  });
  const history = results.history;
  const growth = history?.p99Growth;
  out.push({
    target: `history p99 at ${fmt(growth?.to)} rows ≤ 1.3× p99 at ${fmt(growth?.from)} rows (newest page, deep page)`,
    measured: growth ? `${growth.newest}×, ${growth.deep}×` : null,
    met: growth
      ? growth.newest <= 1.3 &&
        growth.deep <= 1.3 &&
        history.rows.every((/** @type {any} */ r) => r.wrongResponses === 0)
      : null,
  });
  const list = results.list;
  out.push({
    target: "conversation list D1 round trips constant (10, 100, 1000 conversations)",
    measured: list?.roundTrips ? `${list.roundTrips.join(", ")} per request` : null,
    met: list?.rows
      ? list.roundTripsConstant && list.rows.every((/** @type {any} */ r) => r.wrongResponses === 0)
      : null,
  });
  const d1 = results["d1-latency"];
  const d1Ok = d1 && !d1.error;
  out.push({
    target: `send-ack p50 with every D1 call delayed ${d1Ok ? d1.delayMs : 100} ms ≤ 1.2× without (same run)`,
    measured: d1Ok
      ? `${d1.p50Ratio}× (p50 ${d1.delayed.ackLatencyMs.p50} vs ${d1.ours.ackLatencyMs.p50} ms)${d1.delayApplied ? "" : ", delay NOT in effect"}`
      : null,
    met: d1Ok
      ? Boolean(
          d1.delayApplied && d1.ours.checks.ok && d1.delayed.checks.ok && d1.p50Ratio !== null && d1.p50Ratio <= 1.2,
        )
      : null,
  });
  const lf = results["list-freshness"];
  const lfOk = lf && !lf.error;
  out.push({
    target: "conversation list freshness p99 ≤ 1 s (ack to the first list response showing it)",
    measured: lfOk
      ? `p99 ${lf.freshnessMs.p99} ms, ${lf.withinOneSecondPercent} % within 1 s at ${lf.totalRate} msg/s into ${lf.conversations} conversations${lf.serverKeptUp ? "" : " (server behind its sends)"}`
      : null,
    met: lfOk ? lf.freshnessMs.p99 <= 1000 && lf.unseen === 0 && lf.wrongPolls === 0 && lf.checks.ok : null,
  });
  const ib = results.inbox;
  const ibw = ib && !ib.error ? ib.watcher : null;
  out.push({
    target: "inbox frame p99 ≤ 1 s after the ack (1 user in 100 conversations, 10 msg/s across them)",
    measured: ibw
      ? `p99 ${ibw.frameLatencyMs.p99} ms, ${ibw.withinOneSecondPercent} % within 1 s${ibw.unseen ? `, ${ibw.unseen} never shown` : ""}${ibw.serverKeptUp ? "" : " (server behind its sends)"}`
      : null,
    met: ibw ? ibw.frameLatencyMs.p99 <= 1000 && ibw.unseen === 0 && ibw.checks.ok : null,
  });
  const ibg = ib && !ib.error ? ib.group : null;
  out.push({
    target: `room-to-inbox calls ≤ ${ibg?.designBoundPerMember ?? 2}/s per member (feeds ≥ ${ib?.coalesceMs ?? 250} ms apart, ≤ 200 calls/s per room), 100-member group at 100 msg/s`,
    measured: ibg
      ? `${ibg.callsPerMemberPerSecond.min}-${ibg.callsPerMemberPerSecond.max}/s per member, ${ibg.callsPerSecond}/s in all`
      : null,
    met: ibg ? ibg.callsPerMemberPerSecond.max <= ibg.designBoundPerMember && ibg.checks.ok : null,
  });
  return out;
}

/** Every run's delivery and order checks, flattened: [name, checks]. */
export function allChecks(/** @type {Record<string, any>} */ results) {
  /** @type {[string, any][]} */
  const out = [];
  for (const [name, r] of Object.entries(results)) {
    if (!r || r.error) continue;
    for (const who of ["ours", "floor", "node-ws", "delayed", "watcher", "group"])
      if (r[who]?.checks) out.push([`${name} ${who}`, r[who].checks]);
    if (r.checks) out.push([name, r.checks]);
  }
  return out;
}

/**
 * @param {{ date: string, mode: string, machine: any, settings: any, results: Record<string, any>, targets: any[], totalSeconds: number, loadAverage: { atStart: number[], afterStep: Record<string, number[]> } }} report
 */
export function markdown(report) {
  const { results: r, machine: m } = report;
  const lines = [];
  lines.push(`Run ${report.date} (${report.mode}), ${report.totalSeconds} s in all.`);
  lines.push(
    `Machine: ${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.kernel}; Node ${m.node}, wrangler ${m.wrangler}; ` +
      (m.pinned ? `server on core ${m.serverCore}, load generator on core ${m.generatorCore}.` : "not pinned."),
  );
  const loads = Object.values(report.loadAverage.afterStep).map((l) => l[0] ?? 0);
  lines.push(
    `Load average (1 min) at the start ${report.loadAverage.atStart[0]}, after the steps ${Math.min(...loads)} to ${Math.max(...loads)} (2 cores: other jobs shared the machine when above 2).`,
  );
  lines.push("");
  lines.push("| Scenario | Ours | Floor DO | Node ws | Ours ÷ floor |");
  lines.push("|---|---:|---:|---:|---:|");
  for (const clients of [2, 50]) {
    const t = r[`throughput-${clients}`];
    if (!t) continue;
    lines.push(
      `| Durable sends/s, 1 conversation, ${clients} clients (median of ${t.rounds} rounds) | ${fmt(t.ours?.sendsPerSecond)} | ${fmt(t.floor?.sendsPerSecond)} | ${fmt(t["node-ws"]?.sendsPerSecond)} | ${fmt(t.oursOverFloor)}×${t.oursOverFloorByRound?.length ? ` (by round: ${t.oursOverFloorByRound.join(", ")})` : ""} |`,
    );
  }
  for (const [name, f] of Object.entries(r)) {
    if (!name.startsWith("fanout-") || !f || f.error) continue;
    const deliveredShort = (/** @type {any} */ x) =>
      x?.checks && !x.checks.ok ? ` (${x.checks.deliveredPercent} %)` : "";
    lines.push(
      `| Fan-out ${f.sockets} sockets × ${f.rate} msg/s, latency p50 / p99 / p99.9 ms | ${lat(f.ours?.latencyMs)}${deliveredShort(f.ours)} | ${lat(f.floor?.latencyMs)}${deliveredShort(f.floor)} | ${lat(f["node-ws"]?.latencyMs)}${deliveredShort(f["node-ws"])} | ${ratioP99(f)} |`,
    );
  }
  const mc = r["conversations-100"];
  if (mc && !mc.error) {
    lines.push(
      `| 100 conversations at once, durable messages/s in all | ${fmt(mc.ours?.messagesPerSecond)} | ${fmt(mc.floor?.messagesPerSecond)} | — | ${fmt(mc.oursOverFloor)}× |`,
    );
  }
  const h = r.history;
  if (h?.rows) {
    const floor = h.rows.find((/** @type {any} */ row) => row.page === "floor");
    for (const row of h.rows.filter((/** @type {any} */ x) => x.page !== "floor")) {
      lines.push(
        `| History, ${fmt(row.messages)} messages, ${row.page} page of ${h.pageSize}: p50 / p99 ms (D1 round trips) | ${row.latencyMs.p50} / ${row.latencyMs.p99} (${row.d1RoundTrips.join(",")}) | ${restFloor(floor)} | — | ${restRatio(row, floor)} |`,
      );
    }
  }
  for (const im of h?.imports ?? []) {
    lines.push(
      `| History, first request of a 0.1 conversation of ${fmt(im.messages)} messages (imports them from D1 into the room): s (messages/s) | ${fmt(Math.round(im.firstRequestMs / 100) / 10)} (${fmt(im.messagesPerSecond)}) | — | — | — |`,
    );
  }
  const l = r.list;
  if (l?.rows) {
    const floor = l.rows.find((/** @type {any} */ row) => row.page === "floor");
    for (const row of l.rows.filter((/** @type {any} */ x) => x.page !== "floor")) {
      lines.push(
        `| Conversation list, user in ${fmt(row.conversations)}, ${row.page}: p50 / p99 ms (D1 round trips) | ${row.latencyMs.p50} / ${row.latencyMs.p99} (${row.d1RoundTrips.join(",")}) | ${restFloor(floor)} | — | ${restRatio(row, floor)} |`,
      );
    }
  }
  const d1 = r["d1-latency"];
  if (d1 && !d1.error) {
    const ack = (/** @type {any} */ x) => (x?.ackLatencyMs ? `${x.ackLatencyMs.p50} / ${x.ackLatencyMs.p99}` : "—");
    lines.push(
      `| Send-ack p50 / p99 ms, 1 conversation, 2 clients, ${fmt(d1.rate)} msg/s open loop: D1 as it is | ${ack(d1.ours)} | — | — | — |`,
    );
    lines.push(
      `| … the same with every D1 call delayed ${d1.delayMs} ms (a second server; list p50 ${d1.delayed?.listMs?.p50} vs ${d1.ours?.listMs?.p50} ms) | ${ack(d1.delayed)} | — | — | p50 ${fmt(d1.p50Ratio)}× without delay (by round: ${(d1.p50RatioByRound ?? []).join(", ")}) |`,
    );
  }
  const lf = r["list-freshness"];
  if (lf && !lf.error) {
    lines.push(
      `| List freshness, 1 watcher in ${lf.conversations} conversations, ${fmt(lf.totalRate)} msg/s in all, a poll every ${lf.pollMs} ms: ack to list p50 / p99 / max ms (within 1 s) | ${lf.freshnessMs.p50} / ${lf.freshnessMs.p99} / ${lf.freshnessMs.max} (${lf.withinOneSecondPercent} %${lf.unseen ? `, ${lf.unseen} unseen` : ""}) | — | — | — |`,
    );
  }
  const ib = r.inbox;
  if (ib?.watcher) {
    const w = ib.watcher;
    const l = w.frameLatencyMs;
    lines.push(
      `| Inbox, 1 user in ${w.conversations} conversations, ${fmt(w.rate)} msg/s across them, 1 inbox socket: ack to inbox frame p50 / p99 / max ms (within 1 s) | ${l.p50} / ${l.p99} / ${l.max} (${w.withinOneSecondPercent} %${w.unseen ? `, ${w.unseen} never shown` : ""}) | — | — | — |`,
    );
    lines.push(
      `| … inbox frames per message; calls into the user's inbox per second (growth of its version ÷ ${w.phaseSeconds} s) | ${fmt(w.framesPerMessage)}; ${fmt(w.callsPerSecond)} | — | — | — |`,
    );
  }
  if (ib?.group) {
    const g = ib.group;
    const m = g.callsPerMemberPerSecond;
    lines.push(
      `| Inbox, ${g.members}-member group, ${fmt(g.rate)} msg/s from ${g.senders} members: room-to-inbox calls/s in all (per member min / median / max; ${g.designBoundPerMember}/s by design) | ${fmt(g.callsPerSecond)} (${m.min} / ${m.median} / ${m.max}) | — | — | — |`,
    );
    lines.push(
      `| … one member's inbox socket: frames per message (messages per frame); ack to frame p50 / p99 / max ms (within 1 s); the sends' ack p50 / p99 ms | ${fmt(g.watchedFramesPerMessage)} (${fmt(g.messagesPerFrame)}); ${g.watchedFrameLatencyMs.p50} / ${g.watchedFrameLatencyMs.p99} / ${g.watchedFrameLatencyMs.max} (${g.watchedWithinOneSecondPercent} %${g.unseen ? `, ${g.unseen} never shown` : ""}); ${g.ackLatencyMs.p50} / ${g.ackLatencyMs.p99} | — | — | — |`,
    );
  }
  const ho = r.hostile;
  if (ho?.baseline && ho.hostile) {
    const row = (/** @type {any} */ k) =>
      `${k.ackLatencyMs.p50} / ${k.ackLatencyMs.p99}; ${k.deliveryLatencyMs.p50} / ${k.deliveryLatencyMs.p99}; ${k.serverCpuShare}`;
    const x = ho.ratios;
    lines.push(
      `| Hostile load, ${ho.normalSockets} normal sockets in ${ho.conversations} conversations at ${ho.ratePerUser} msg/s each, without the hostile sockets (median of ${ho.baseline.phases} phases of ${ho.phaseMs / 1000} s): ack p50 / p99; delivery p50 / p99 ms; server CPU share | ${row(ho.baseline)} | — | — | — |`,
    );
    lines.push(
      `| … with ${ho.hostileSockets} hostile sockets in them (${ho.hostile.phases} phases, alternating) | ${row(ho.hostile)} | — | — | ÷ without: ack ${fmt(x.ackP50)}× / ${fmt(x.ackP99)}×, delivery ${fmt(x.deliveryP50)}× / ${fmt(x.deliveryP99)}× (ack p50 by pair: ${(ho.ratiosByPair ?? []).map((/** @type {any} */ p) => p.ackP50).join(", ")}) |`,
    );
  }
  const mem = r.memory?.ours ? r.memory : null;
  if (mem) {
    // At or below zero, the figure is within the noise of a shared process's RSS: said so, not shown as a size.
    const kib = (/** @type {number | undefined} */ v) => (v === undefined ? "—" : v > 0 ? fmt(v) : `< noise (${v})`);
    lines.push(
      `| Memory per idle socket, ${fmt(mem.sockets)} sockets in ${mem.rooms} rooms of ${mem.socketsPerRoom}: KiB of server RSS (of JS heap after GC) | ${kib(mem.ours.perSocketKiB)} (${kib(mem.ours.jsHeapPerSocketKiB)}) | ${kib(mem.floor?.perSocketKiB)} (${kib(mem.floor?.jsHeapPerSocketKiB)}) | ${kib(mem["node-ws"]?.perSocketKiB)} (${kib(mem["node-ws"]?.jsHeapPerSocketKiB)}) | ${mem.oursOverFloor ? `${fmt(mem.oursOverFloor)}×` : "—"} (${mem.oursOverNodeWs ? `${fmt(mem.oursOverNodeWs)}×` : "—"} Node ws) |`,
    );
  }
  const bigFan = Object.entries(r).find(([name, v]) => name.startsWith("fanout-1000") && v?.ours)?.[1];
  if (bigFan) {
    const c = (/** @type {any} */ x) => fmt(x?.connectsPerSecond);
    const ratio =
      bigFan.ours.connectsPerSecond && bigFan.floor?.connectsPerSecond
        ? `${Math.round((bigFan.ours.connectsPerSecond / bigFan.floor.connectsPerSecond) * 100) / 100}×`
        : "—";
    lines.push(
      `| WebSocket connects/s, ${fmt(bigFan.sockets)} sockets into 1 conversation, 64 handshakes at a time | ${c(bigFan.ours)} | ${c(bigFan.floor)} | ${c(bigFan["node-ws"])} | ${ratio} |`,
    );
  }
  const rc = r.reconnect;
  if (rc && !rc.error) {
    lines.push(
      `| Reconnect storm, ${fmt(rc.sockets)} clients with since (${rc.missed} missed): all caught up, s (per client p50 / p99 ms) | ${fmt(rc.allCaughtUpSeconds)} (${rc.caughtUpMs.p50} / ${rc.caughtUpMs.p99}) | — | — | — |`,
    );
  }
  lines.push("");
  lines.push("| Target | Measured | |");
  lines.push("|---|---|---|");
  for (const t of report.targets) lines.push(`| ${t.target} | ${fmt(t.measured)} | ${mark(t.met)} |`);
  lines.push("");
  const checks = allChecks(r);
  const bad = checks.filter(([, c]) => !c.ok);
  lines.push(
    bad.length === 0
      ? `Delivery and order: all ${checks.length} runs delivered 100 % with seq increasing at every receiver and no duplicates.`
      : `Delivery and order FAILED in: ${bad.map(([n, c]) => `${n} (${c.deliveredPercent} % delivered, ${c.duplicates} duplicates, ${c.orderViolations} out of order, ${c.errorFrames} error frames${c.inboxFailures?.length ? `; inbox: ${c.inboxFailures.join(", ")}` : ""})`).join("; ")}.`,
  );
  if (lf?.note) lines.push(`List freshness: ${lf.note}.`);
  if (ho?.hostileTotals) {
    const t = ho.hostileTotals;
    const codes = (/** @type {Record<string, any>} */ o) =>
      Object.entries(o ?? {})
        .map(([k, v]) => `${k} ${typeof v === "number" ? v : JSON.stringify(v)}`)
        .join(", ") || "none";
    lines.push(
      `Hostile sockets (all hostile phases; a server of its own with the product's limits): ${fmt(t.connects)} connects, frames sent ${codes(t.sent)}; error frames ${codes(t.errorFrames)}; closes ${codes(t.closes)}; ${fmt(t.acks)} hostile sends stored; hostile frames/s by phase ${(t.framesPerSecondInWindow ?? []).join(", ")}; normal users refused ${ho.normal.rateLimited}, closed ${ho.normal.closed}; the generator's lag p99 ${ho.baseline.generatorLagMsP99} ms without, ${ho.hostile.generatorLagMsP99} ms with.`,
    );
  }
  const failed = Object.entries(r).filter(([, v]) => v?.error);
  if (failed.length > 0) lines.push(`Scenarios that failed to run: ${failed.map(([n]) => n).join(", ")}.`);
  lines.push("");
  lines.push("CPU seconds (server side / load generator) and wall seconds of each measured phase:");
  lines.push("");
  lines.push("| Scenario | Ours | Floor DO | Node ws |");
  lines.push("|---|---:|---:|---:|");
  for (const [name, v] of Object.entries(r)) {
    if (!v || v.error) continue;
    const cpu = (/** @type {any} */ x) =>
      x?.cpu ? `${x.cpu.serverCpuSeconds} / ${x.cpu.generatorCpuSeconds} in ${x.cpu.wallSeconds}` : "—";
    if (v.cpu) lines.push(`| ${name} | ${cpu(v)} | — | — |`);
    else if (v.ours?.cpu || v.floor?.cpu)
      lines.push(`| ${name} | ${cpu(v.ours)} | ${cpu(v.floor)} | ${cpu(v["node-ws"])} |`);
  }
  lines.push("");
  lines.push(
    `Settings: ${report.settings.note} (${Object.entries(report.settings.varsOverridden)
      .map(([k, v]) => `${k}=${v}`)
      .join(", ")}).`,
  );
  return `${lines.join("\n")}\n`;
}

/** The REST floor's p50 / p99. */
function restFloor(/** @type {any} */ floor) {
  return floor ? `${floor.latencyMs.p50} / ${floor.latencyMs.p99}` : "—";
}

/** Ours ÷ floor of a REST p50. */
function restRatio(/** @type {any} */ row, /** @type {any} */ floor) {
  const a = row.latencyMs.p50;
  const b = floor?.latencyMs.p50;
  return a && b ? `p50 ${Math.round((a / b) * 100) / 100}×` : "—";
}

/** Ours ÷ floor of the fan-out p99. */
function ratioP99(/** @type {any} */ f) {
  const a = f.ours?.latencyMs?.p99;
  const b = f.floor?.latencyMs?.p99;
  return a && b ? `p99 ${Math.round((a / b) * 100) / 100}×` : "—";
}
