// A conversation's unsent messages, in the order they were written, kept in a storage that outlives the page
// (localStorage in a browser), so that a reload or a switch of conversation loses none of them. The socket
// decides when each is sent; this module only keeps the list and its saved copy in step.

/** Where outboxes are saved: localStorage fits (wrapped by `defaultOutboxStorage`), so does an async store. */
export interface OutboxStorage {
  get(key: string): string | null | undefined | Promise<string | null | undefined>;
  set(key: string, value: string): void | Promise<void>;
  remove(key: string): void | Promise<void>;
}

/** `queued`: waiting its turn; `sending`: on the wire; `failed`: refused for good, until retried or discarded. */
export type OutboxState = "queued" | "sending" | "failed";

export interface OutboxItem {
  localId: string;
  content: string;
  state: OutboxState;
  /** Why it failed: the server's error code and message. */
  error?: { code: string; message: string };
}

export interface OutboxSnapshot {
  /** Oldest first. */
  entries: OutboxItem[];
  /** The last failure to read or save the outbox, or null; while set, a reload may lose what is unsent. */
  storageError: string | null;
}

/** A storage in memory. */
export function memoryOutboxStorage(data = new Map<string, string>()): OutboxStorage {
  return {
    get: (key) => data.get(key) ?? null,
    set: (key, value) => {
      data.set(key, value);
    },
    remove: (key) => {
      data.delete(key);
    },
  };
}

/** Shared by every socket of this page (or process) that has no localStorage. */
const pageMemory = memoryOutboxStorage();

interface WebStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** One wrapper per localStorage: the outboxes of a page share it, and so its queue of reads and writes. */
const webWrappers = new WeakMap<WebStorage, OutboxStorage>();

/** localStorage when there is one (a browser), else memory shared by the page's sockets. */
export function defaultOutboxStorage(): OutboxStorage {
  let web: WebStorage | undefined;
  try {
    // Reading it throws in some privacy modes, where it exists but is refused.
    web = (globalThis as { localStorage?: WebStorage }).localStorage;
  } catch {
    web = undefined;
  }
  if (!web) return pageMemory;
  let wrapper = webWrappers.get(web);
  if (!wrapper) {
    const local = web;
    wrapper = {
      get: (key) => local.getItem(key),
      set: (key, value) => local.setItem(key, value),
      remove: (key) => local.removeItem(key),
    };
    webWrappers.set(web, wrapper);
  }
  return wrapper;
}

/** The storage key of one user's outbox in one conversation of one service. */
export function outboxKey(baseUrl: string, userId: string | undefined, conversationId: string): string {
  return ["edge-chat", "outbox", "v1", baseUrl, userId ?? "", conversationId].map(encodeURIComponent).join("/");
}

/** The `sub` of a JWT, unchecked (the server checks the token): who an outbox belongs to. */
export function tokenSubject(token: string): string | undefined {
  try {
    const payload = token.split(".")[1] ?? "";
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}

/** What is saved: `sending` is saved as queued (after a reload nobody knows, and a resend is safe). */
interface Saved {
  v: 1;
  entries: { localId: string; content: string; error?: { code: string; message: string } }[];
}

function serialize(entries: readonly OutboxItem[]): string | null {
  if (entries.length === 0) return null;
  const saved: Saved = {
    v: 1,
    entries: entries.map(({ localId, content, error }) => (error ? { localId, content, error } : { localId, content })),
  };
  return JSON.stringify(saved);
}

function parse(text: string | null | undefined): OutboxItem[] {
  if (!text) return [];
  const saved = JSON.parse(text) as Partial<Saved>;
  if (saved.v !== 1 || !Array.isArray(saved.entries)) throw new Error("not an outbox");
  return saved.entries.flatMap((e): OutboxItem[] => {
    if (typeof e?.localId !== "string" || typeof e.content !== "string") return [];
    const error =
      typeof e.error?.code === "string" && typeof e.error.message === "string"
        ? { code: e.error.code, message: e.error.message }
        : undefined;
    const { localId, content } = e;
    return [error ? { localId, content, state: "failed", error } : { localId, content, state: "queued" }];
  });
}

const reason = (err: unknown) => (err instanceof Error ? err.message : String(err));

/**
 * The reads and writes of each storage, one after the other in the order they were asked for: an outbox opened
 * right after another of the same key was closed (a reload, a quick switch back) reads what that one saved.
 */
const storageQueues = new WeakMap<OutboxStorage, Promise<void>>();

function serially(storage: OutboxStorage, op: () => Promise<void>): Promise<void> {
  const done = (storageQueues.get(storage) ?? Promise.resolve()).then(op);
  storageQueues.set(
    storage,
    done.catch(() => {}),
  );
  return done;
}

/**
 * One user's unsent messages in one conversation. Usable at once: what is added before the saved copy is read
 * goes after the saved entries (they were written earlier). Every change is saved, the latest state winning;
 * `onChange` hears every change of the entries or of the storage's health.
 */
export class Outbox {
  /** Resolves once the saved entries are in. */
  readonly loaded: Promise<void>;
  /** localIds added before the load that the saved copy held with other content: dropped, the saved one kept. */
  readonly dropped: string[] = [];
  #entries: OutboxItem[] = [];
  #isLoaded = false;
  /** Its socket is closed: it changes no more, and saves nothing more than it held then. */
  #closed = false;
  #storageError: string | null = null;
  #key: string | undefined;
  /** What the storage holds, as far as this outbox knows (undefined: not known). */
  #saved: string | null | undefined;
  readonly #storage: OutboxStorage;
  readonly #onChange: () => void;

  constructor(storage: OutboxStorage, key: Promise<string>, onChange: () => void) {
    this.#storage = storage;
    this.#onChange = onChange;
    this.loaded = serially(storage, () => this.#load(key));
  }

  get isLoaded(): boolean {
    return this.#isLoaded;
  }

  snapshot(): OutboxSnapshot {
    return {
      entries: this.#entries.map((e) => ({ ...e, ...(e.error ? { error: { ...e.error } } : {}) })),
      storageError: this.#storageError,
    };
  }

  find(localId: string): Readonly<OutboxItem> | undefined {
    return this.#entries.find((e) => e.localId === localId);
  }

  /** The oldest entry waiting its turn. */
  nextQueued(): Readonly<OutboxItem> | undefined {
    return this.#entries.find((e) => e.state === "queued");
  }

  /**
   * Stops all changes; a load still under way saves what was added before. Another outbox of the same key
   * may be opened next: a late change from here would overwrite what that one saves.
   */
  close(): void {
    this.#closed = true;
  }

  add(localId: string, content: string): void {
    if (this.#closed) return;
    this.#entries.push({ localId, content, state: "queued" });
    this.#changed();
  }

  mark(localId: string, state: OutboxState, error?: { code: string; message: string }): void {
    const entry = this.#entries.find((e) => e.localId === localId);
    if (this.#closed || !entry || (entry.state === state && entry.error === error)) return;
    entry.state = state;
    if (state === "failed" && error) entry.error = error;
    else delete entry.error;
    this.#changed();
  }

  /** Takes an entry out (stored, or discarded); false when there was none. */
  remove(localId: string): boolean {
    const index = this.#entries.findIndex((e) => e.localId === localId);
    if (this.#closed || index < 0) return false;
    this.#entries.splice(index, 1);
    this.#changed();
    return true;
  }

  async #load(key: Promise<string>): Promise<void> {
    try {
      const resolved = await key;
      const text = await this.#storage.get(resolved);
      // From here on changes are saved, even over a saved copy that cannot be read.
      this.#key = resolved;
      this.#saved = text ?? null;
      const saved = parse(text);
      const added = this.#entries.filter((e) => {
        const same = saved.find((s) => s.localId === e.localId);
        if (same && same.content !== e.content) this.dropped.push(e.localId);
        return !same;
      });
      this.#entries = [...saved, ...added];
      // In the same turn of the queue: an outbox of this key opened next reads these additions too.
      await this.#save(resolved);
    } catch (err) {
      this.#storageError = `The saved outbox could not be read: ${reason(err)}`;
    }
    this.#isLoaded = true;
    this.#onChange();
  }

  #changed(): void {
    this.#onChange();
    const key = this.#key;
    if (!this.#isLoaded || key === undefined) return;
    void serially(this.#storage, () => this.#save(key));
  }

  /** Writes the entries as they are when it runs: several changes in a row cost one write. Never throws. */
  async #save(key: string): Promise<void> {
    const text = serialize(this.#entries);
    if (text === this.#saved) return;
    try {
      if (text === null) await this.#storage.remove(key);
      else await this.#storage.set(key, text);
      this.#saved = text;
      if (this.#storageError === null) return;
      this.#storageError = null;
    } catch (err) {
      this.#saved = undefined;
      this.#storageError = `The outbox could not be saved: ${reason(err)}`;
    }
    if (this.#isLoaded) this.#onChange();
  }
}
