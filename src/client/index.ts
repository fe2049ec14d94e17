// The typed client of the chat API: `ChatClient` for REST, `ConversationSocket` for one conversation live,
// `InboxSocket` for the user's whole conversation list live (merged with `mergeConversation`), and two stores
// for screens built on them: `ConversationList` and `LiveConversation` (React hooks: `edge-chat-client/react`).
export type {
  ClientFrame,
  ConversationPage,
  ErrorCode,
  InboxFrame,
  InboxState,
  LastMessage,
  MessagePage,
  ServerFrame,
  Ticket,
} from "./contract.js";
export {
  ConversationList,
  type ConversationListOptions,
  type ConversationListSnapshot,
} from "./conversation-list.js";
export {
  activityOf,
  byActivity,
  InboxSocket,
  type InboxSocketEvents,
  type InboxSocketOptions,
  type InboxTotals,
  mergeConversation,
  mergeConversations,
  mergeStates,
  removeConversation,
} from "./inbox.js";
export {
  LiveConversation,
  type LiveConversationOptions,
  type LiveConversationSnapshot,
  type Markers,
  type MessageStatus,
  messageStatus,
} from "./live-conversation.js";
export {
  defaultOutboxStorage,
  memoryOutboxStorage,
  type OutboxItem,
  type OutboxSnapshot,
  type OutboxState,
  type OutboxStorage,
} from "./outbox.js";
export {
  ChatApiError,
  ChatClient,
  type ChatClientOptions,
  type Conversation,
  type Message,
  type Participant,
  type TokenSource,
} from "./rest.js";
export {
  ConversationSocket,
  type ConversationSocketEvents,
  type ConversationSocketOptions,
  newLocalId,
  type SocketConnector,
  type SocketStatus,
  type WebSocketLike,
} from "./socket.js";
export type { Listener, SnapshotStore } from "./store.js";
