/**
 * A remote channel's message on the wire (the NATS payload):
 *
 * | offset | size | meaning |
 * |---|---|---|
 * | 0 | 4 | magic `ICH1` (format version 1) |
 * | 4 | 8 | the sender's sequence number of this message (float64, little-endian; 1, 2, 3, ...) |
 * | 12 | ... | the value in the core's codec (serialization.ts), as a local channel carries it |
 *
 * The sender is the subject's last token (naming.ts); the broker's message
 * id (`Nats-Msg-Id`, used to de-duplicate publishes) is `<sender>:<seq>`.
 *
 * What cannot cross machines is refused here with NotShareableError naming
 * the path: SharedArrayBuffer (the codec refuses it without an attacher),
 * channel ends and Lock/Semaphore/Event (shared memory of this process).
 */
import { CorruptDataError, NotShareableError, RecvChannel, SendChannel, Event, Lock, Semaphore } from "../core.js";
import { decode, Encoder } from "../internals.js";

const MAGIC = 0x31484349; // "ICH1" read as a little-endian uint32
export const WIRE_HEADER_BYTES = 12;

const encoder = new Encoder();

const refuseSharedMemory = {
  attach(value: object, path: () => string): number | undefined {
    if (value instanceof SendChannel || value instanceof RecvChannel) {
      throw new NotShareableError(
        `${path()} is a channel end: it cannot cross machines on a remote channel (its memory is in this process); send plain data, or connect another remote channel by name`,
        path(),
      );
    }
    if (value instanceof Lock || value instanceof Semaphore || value instanceof Event) {
      throw new NotShareableError(`${path()} is a ${value.constructor.name}: it cannot cross machines on a remote channel (its memory is in this process)`, path());
    }
    return undefined;
  },
};

/** The payload for message `seq` carrying `value`. Throws NotShareableError (nothing is sent). */
export function encodeWire(seq: number, value: unknown): Uint8Array {
  const body = encoder.encode(value, refuseSharedMemory);
  const out = new Uint8Array(WIRE_HEADER_BYTES + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC, true);
  view.setFloat64(4, seq, true);
  out.set(body, WIRE_HEADER_BYTES);
  encoder.trim();
  return out;
}

export interface WireMessage {
  seq: number;
  value: unknown;
}

/** Decodes a payload; CorruptDataError when it was not written by encodeWire. */
export function decodeWire(payload: Uint8Array, subject: string): WireMessage {
  if (payload.length < WIRE_HEADER_BYTES + 1) {
    throw new CorruptDataError(`message on ${subject} is ${payload.length} bytes: too short to be a remote channel's message (was it published by hand?)`);
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.length);
  if (view.getUint32(0, true) !== MAGIC) {
    throw new CorruptDataError(`message on ${subject} does not start with "ICH1": it was not sent by connectChannel (or by a newer, incompatible version)`);
  }
  const seq = view.getFloat64(4, true);
  if (!Number.isSafeInteger(seq) || seq < 1) throw new CorruptDataError(`message on ${subject} carries sequence number ${seq}`);
  return { seq, value: decode(payload.subarray(WIRE_HEADER_BYTES)) };
}
