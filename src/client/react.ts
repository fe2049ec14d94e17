// React hooks over the SDK's stores (`edge-chat-client/react`; React 18 or later, a peer dependency). Each
// hook that opens something owns it: it is made after the component mounts (in an effect, so server rendering
// and StrictMode's extra mount open nothing that stays), made again when the client or the conversation
// changes, and closed on unmount. Options are read when it is made.

import { useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";
import {
  ConversationList,
  type ConversationListOptions,
  type ConversationListSnapshot,
  EMPTY_LIST,
} from "./conversation-list.js";
import {
  emptyConversation,
  LiveConversation,
  type LiveConversationOptions,
  type LiveConversationSnapshot,
  type Markers,
  type MessageStatus,
  messageStatus,
} from "./live-conversation.js";
import type { OutboxItem } from "./outbox.js";
import { ChatApiError, type ChatClient, type Message, type Participant } from "./rest.js";

export type { ConversationListOptions, ConversationListSnapshot, LiveConversationOptions, LiveConversationSnapshot };

const noSubscribe = () => () => {};

/** A store made by `make` after mount, again when `of` or `and` change, closed on unmount; null until then. */
function useOwned<S extends { close(): void }>(make: (() => S) | null, of: unknown, and?: unknown): S | null {
  const [store, setStore] = useState<S | null>(null);
  const makeRef = useRef(make);
  makeRef.current = make;
  // biome-ignore lint/correctness/useExhaustiveDependencies: what the store is of decides when it is made again.
  useEffect(() => {
    const made = makeRef.current?.() ?? null;
    setStore(made);
    return () => made?.close();
  }, [of, and]);
  return store;
}

/** A field of a store's snapshot, re-rendering only when that field changes (`fallback` while no store). */
function useField<S extends object, K extends keyof S>(
  store: { subscribe(l: () => void): () => void; getSnapshot(): S } | null,
  key: K,
  fallback: S[K],
): S[K] {
  return useSyncExternalStore(
    store ? store.subscribe : noSubscribe,
    store ? () => store.getSnapshot()[key] : () => fallback,
    () => fallback,
  );
}

// ---- The conversation list ------------------------------------------------------------------------------

export interface ConversationListHandle extends ConversationListSnapshot {
  loadMore(): Promise<void>;
  reload(): Promise<void>;
  /** The store, for components that share it; null before mount. */
  store: ConversationList | null;
}

/**
 * The signed-in user's conversations, most recent first, live over the inbox socket, with unread totals
 * (see `ConversationList`). No client (null): an empty list, nothing opened.
 */
export function useConversationList(
  client: ChatClient | null | undefined,
  options?: ConversationListOptions,
): ConversationListHandle {
  const store = useOwned(client ? () => new ConversationList(client, options) : null, client);
  const snapshot = useSyncExternalStore(
    store ? store.subscribe : noSubscribe,
    store ? store.getSnapshot : () => EMPTY_LIST,
    () => EMPTY_LIST,
  );
  const actions = useMemo(
    () => ({
      loadMore: () => store?.loadMore() ?? Promise.resolve(),
      reload: () => store?.reload() ?? Promise.resolve(),
    }),
    [store],
  );
  return { ...snapshot, ...actions, store };
}

// ---- One conversation -----------------------------------------------------------------------------------

const NOTHING: readonly never[] = [];
const NO_MARKERS: Readonly<Record<string, Markers>> = {};

export interface ConversationHandle extends LiveConversationSnapshot {
  /** Shows in `pending` at once and in `messages` once stored; resolves with the stored message. */
  send(content: string, localId?: string): Promise<Message>;
  retry(localId: string): boolean;
  discard(localId: string): boolean;
  /** Call on every keystroke of the draft: the others are told at most every 3 s (and `send` ends it). */
  startTyping(): void;
  stopTyping(): void;
  /** Moves the user's read marker forward to `seq` (nothing when it is there already). */
  markRead(seq: number): void;
  /** Loads the page of history before the oldest message shown. */
  loadOlder(): Promise<void>;
  /** The store, for `useTyping`, `usePresence`, `useReceipts` in other components; null before mount. */
  store: LiveConversation | null;
}

/**
 * One conversation, live: its messages in seq order (the newest page, `loadOlder` for more), what the user
 * sent that is not stored yet in `pending` (from the socket's outbox, kept across reloads), presence, typing
 * and markers (see `LiveConversation`). No client or no id: empty, nothing opened.
 */
export function useConversation(
  client: ChatClient | null | undefined,
  conversationId: string | null | undefined,
  options?: LiveConversationOptions,
): ConversationHandle {
  const store = useOwned(
    client && conversationId ? () => new LiveConversation(client, conversationId, options) : null,
    client,
    conversationId,
  );
  const empty = useMemo(() => emptyConversation(conversationId ?? ""), [conversationId]);
  const snapshot = useSyncExternalStore(
    store ? store.subscribe : noSubscribe,
    store ? store.getSnapshot : () => empty,
    () => empty,
  );
  const actions = useMemo(
    () => ({
      send: (content: string, localId?: string) =>
        store?.send(content, localId) ??
        Promise.reject(new ChatApiError(0, "network", "The conversation is not open yet")),
      retry: (localId: string) => store?.retry(localId) ?? false,
      discard: (localId: string) => store?.discard(localId) ?? false,
      startTyping: () => store?.typing(),
      stopTyping: () => store?.stopTyping(),
      markRead: (seq: number) => store?.markRead(seq),
      loadOlder: () => store?.loadOlder() ?? Promise.resolve(),
    }),
    [store],
  );
  return { ...snapshot, ...actions, store };
}

/** What the slice hooks take: what `useConversation` returns, or its store. */
export type ConversationSource = { store: LiveConversation | null } | LiveConversation | null | undefined;

const storeOf = (source: ConversationSource): LiveConversation | null =>
  source instanceof LiveConversation ? source : (source?.store ?? null);

/** The other users typing in the conversation now; re-renders only when that changes. */
export function useTyping(source: ConversationSource): readonly string[] {
  return useField(storeOf(source), "typing", NOTHING);
}

/** The users with the conversation open now (the user too, once connected); re-renders only when that changes. */
export function usePresence(source: ConversationSource): readonly string[] {
  return useField(storeOf(source), "online", NOTHING);
}

export interface Receipts {
  /** Every participant's markers by user id. */
  markers: Readonly<Record<string, Markers>>;
  /** `sent`, `delivered` (to every other participant) or `read` (by every other participant). */
  statusOf(message: Pick<Message, "seq" | "senderId">): MessageStatus;
}

/** The participants' read and delivered markers, and each message's status from them. */
export function useReceipts(source: ConversationSource): Receipts {
  const store = storeOf(source);
  const markers = useField(store, "markers", NO_MARKERS);
  const participants: readonly Participant[] = useField(store, "participants", NOTHING);
  return useMemo(
    () => ({ markers, statusOf: (message) => messageStatus(message, participants, markers) }),
    [markers, participants],
  );
}

export type { Markers, MessageStatus, OutboxItem };
