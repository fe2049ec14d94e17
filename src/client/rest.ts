import type {
  Conversation,
  ConversationPage,
  ErrorCode,
  InboxState,
  Message,
  MessagePage,
  Participant,
  Ticket,
} from "./contract.js";

export type { Conversation, Message, Participant };

/** A token, or a function that returns a fresh one (called before every request). */
export type TokenSource = string | (() => string | Promise<string>);

export interface ChatClientOptions {
  /** The service's origin, e.g. `https://chat.example.com` (no trailing `/v1`). */
  baseUrl: string;
  token: TokenSource;
  /** Defaults to the global fetch. */
  fetch?: (request: Request) => Promise<Response>;
}

/** A refused call, with the contract's error code; `retryAfter` in seconds for 429 and 503. */
export class ChatApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode | "network",
    message: string,
    readonly details?: unknown,
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = "ChatApiError";
  }

  /** Worth trying again later with the same input (and the same localId, for a send). */
  get retryable(): boolean {
    return this.code === "unavailable" || this.code === "rate_limited" || this.code === "network";
  }
}

/** Anything thrown, as a ChatApiError (what is not one already is taken for a network failure). */
export function asChatApiError(err: unknown): ChatApiError {
  return err instanceof ChatApiError
    ? err
    : new ChatApiError(0, "network", err instanceof Error ? err.message : String(err));
}

const enc = encodeURIComponent;

/** The REST API, one method per route; every failure is a ChatApiError. */
export class ChatClient {
  readonly baseUrl: string;
  readonly #token: TokenSource;
  readonly #fetch: (request: Request) => Promise<Response>;

  constructor(options: ChatClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#token = options.token;
    this.#fetch = options.fetch ?? ((request) => fetch(request));
  }

  async token(): Promise<string> {
    return typeof this.#token === "string" ? this.#token : await this.#token();
  }

  createConversation(input: { participantIds: string[]; title?: string; direct?: boolean }) {
    return this.#call<Conversation>("POST", "/v1/conversations", input);
  }

  listConversations(page: { limit?: number; cursor?: string } = {}) {
    return this.#call<ConversationPage>("GET", `/v1/conversations${query(page)}`);
  }

  getConversation(id: string) {
    return this.#call<Conversation>("GET", `/v1/conversations/${enc(id)}`);
  }

  addParticipants(id: string, userIds: string[]) {
    return this.#call<Conversation>("POST", `/v1/conversations/${enc(id)}/participants`, { userIds });
  }

  /** Removes a participant (owners), or leaves when `userId` is the caller's own. */
  removeParticipant(id: string, userId: string) {
    return this.#call<void>("DELETE", `/v1/conversations/${enc(id)}/participants/${enc(userId)}`);
  }

  /** A page of history: newest first, or oldest first with `after`. */
  history(id: string, page: { before?: number; after?: number; limit?: number } = {}) {
    return this.#call<MessagePage>("GET", `/v1/conversations/${enc(id)}/messages${query(page)}`);
  }

  sendMessage(id: string, input: { content: string; localId?: string }) {
    return this.#call<Message>("POST", `/v1/conversations/${enc(id)}/messages`, input);
  }

  editMessage(id: string, seq: number, content: string) {
    return this.#call<Message>("PATCH", `/v1/conversations/${enc(id)}/messages/${seq}`, { content });
  }

  deleteMessage(id: string, seq: number) {
    return this.#call<Message>("DELETE", `/v1/conversations/${enc(id)}/messages/${seq}`);
  }

  markRead(id: string, seq: number) {
    return this.#call<Participant>("POST", `/v1/conversations/${enc(id)}/read`, { seq });
  }

  setTyping(id: string, typing: boolean) {
    return this.#call<void>("POST", `/v1/conversations/${enc(id)}/typing`, { typing });
  }

  ticket(id: string) {
    return this.#call<Ticket>("POST", `/v1/conversations/${enc(id)}/ticket`);
  }

  /** The caller's unread totals over all their conversations, and their inbox version. */
  inbox() {
    return this.#call<InboxState>("GET", "/v1/inbox");
  }

  inboxTicket() {
    return this.#call<Ticket>("POST", "/v1/inbox/ticket");
  }

  subscribePush(subscription: { endpoint: string; keys: { p256dh: string; auth: string } }) {
    return this.#call<void>("PUT", "/v1/push/subscriptions", subscription);
  }

  unsubscribePush(endpoint: string) {
    return this.#call<void>("DELETE", "/v1/push/subscriptions", { endpoint });
  }

  /** The URL of a conversation's socket, authenticated by a fresh single-use ticket. */
  async socketUrl(id: string, since?: number): Promise<string> {
    const { ticket } = await this.ticket(id);
    const url = new URL(`${this.baseUrl}/v1/conversations/${enc(id)}/ws`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("ticket", ticket);
    if (since !== undefined) url.searchParams.set("since", String(since));
    return url.toString();
  }

  /** The URL of the caller's inbox socket, authenticated by a fresh single-use ticket. */
  async inboxSocketUrl(since?: number): Promise<string> {
    const { ticket } = await this.inboxTicket();
    const url = new URL(`${this.baseUrl}/v1/inbox/ws`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("ticket", ticket);
    if (since !== undefined) url.searchParams.set("since", String(since));
    return url.toString();
  }

  async #call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers = new Headers({ Authorization: `Bearer ${await this.token()}` });
    if (body !== undefined) headers.set("Content-Type", "application/json");
    const request = new Request(`${this.baseUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let response: Response;
    try {
      response = await this.#fetch(request);
    } catch (err) {
      throw new ChatApiError(0, "network", err instanceof Error ? err.message : "The network failed");
    }
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    const json = text ? safeJson(text) : undefined;
    if (response.ok) return json as T;
    const error = (json as { error?: { code?: ErrorCode; message?: string; details?: unknown } } | undefined)?.error;
    const retryAfter = Number(response.headers.get("Retry-After") ?? Number.NaN);
    throw new ChatApiError(
      response.status,
      error?.code ?? "internal",
      error?.message ?? `HTTP ${response.status}`,
      error?.details,
      Number.isFinite(retryAfter) ? retryAfter : undefined,
    );
  }
}

function query(params: Record<string, string | number | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== undefined) search.set(key, String(value));
  const text = search.toString();
  return text ? `?${text}` : "";
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
