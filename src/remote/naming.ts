/**
 * How a remote channel's name maps to JetStream objects. One channel is:
 *
 * | object | name | what it holds |
 * |---|---|---|
 * | stream | `ICH_<name>` | the messages: work-queue retention, subjects `ich.<name>.<sender>` |
 * | durable pull consumer | `receivers` on that stream | the one consumer every receiving process pulls from |
 * | KV bucket | `ICHMETA_<name>`, key `state` | who is connected, and whether the channel is closed (membership.ts) |
 *
 * The prefixes keep these apart from a user's own streams and buckets.
 */

/** Names a remote channel may have: they become parts of stream, subject and bucket names. */
const NAME_PATTERN = /^[A-Za-z0-9_-]{1,200}$/;

export function checkChannelName(name: unknown): string {
  if (typeof name !== "string" || !NAME_PATTERN.test(name)) {
    throw new RangeError(
      `connectChannel: the channel name must be 1 to 200 characters A-Z, a-z, 0-9, "_" or "-" (it names a JetStream stream and subjects), got ${JSON.stringify(name)}`,
    );
  }
  return name;
}

export function streamName(name: string): string {
  return `ICH_${name}`;
}

/** Every sender publishes on a subject of its own under this prefix. */
export function subjectPrefix(name: string): string {
  return `ich.${name}`;
}

export function senderSubject(name: string, senderId: string): string {
  return `ich.${name}.${senderId}`;
}

/** The sender id is the subject's last token. */
export function senderOfSubject(subject: string): string {
  return subject.slice(subject.lastIndexOf(".") + 1);
}

export const CONSUMER_NAME = "receivers";

/**
 * Core NATS (not stored) subject on which receiving processes of a bounded
 * channel announce that they took a message (so the stream has room), and
 * on which its senders listen while the stream is full. Outside `ich.` so
 * that no channel's stream captures it.
 */
export function roomSubject(name: string): string {
  return `_ICH.room.${name}`;
}

export function metaBucket(name: string): string {
  return `ICHMETA_${name}`;
}

export const STATE_KEY = "state";

/** The local channels' name (core names are at most 64 bytes of UTF-8). */
export function localName(name: string): string {
  const full = `nats:${name}`;
  return full.length <= 64 ? full : `${full.slice(0, 61)}...`;
}

/** A fresh id for one connected end of one process: 16 characters a-z0-9, safe in subjects and message ids. */
export function newMemberId(): string {
  const bytes = new Uint8Array(10);
  crypto.getRandomValues(bytes);
  let id = "";
  for (const b of bytes) id += (b % 36).toString(36);
  return `${process.pid.toString(36)}x${id}`.slice(0, 20);
}
