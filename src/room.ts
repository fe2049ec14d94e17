import { DurableObject } from "cloudflare:workers";
import type { Env } from "./env";

/** One conversation: its live sockets, the order of its messages, and their way into D1. */
export class ConversationRoom extends DurableObject<Env> {}
