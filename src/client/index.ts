// The typed client of the chat API: `ChatClient` for REST, `ConversationSocket` for one conversation live,
// `InboxSocket` for the user's whole conversation list live (merged with `mergeConversation`).
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
} from "./inbox";
export {
  defaultOutboxStorage,
  memoryOutboxStorage,
  type OutboxItem,
  type OutboxSnapshot,
  type OutboxState,
  type OutboxStorage,
} from "./outbox";
export {
  ChatApiError,
  ChatClient,
  type ChatClientOptions,
  type Conversation,
  type Message,
  type Participant,
  type TokenSource,
} from "./rest";
export {
  ConversationSocket,
  type ConversationSocketEvents,
  type ConversationSocketOptions,
  newLocalId,
  type SocketConnector,
  type SocketStatus,
  type WebSocketLike,
} from "./socket";
