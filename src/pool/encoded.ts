/**
 * Values as channel-codec bytes outside a channel: what a pool task's
 * arguments and results become when they cross in tinypool's messages
 * (protocol.ts). The same codec and the same rules as a channel message
 * (Lock, Semaphore, Event and SharedArrayBuffer are shared by id; a value
 * with channel ends never takes this path).
 */
import { decodeFromChannel, encodeForChannel } from "../internals.js";
import type { EncodedArgs } from "./protocol.js";

/** A message encodeForChannel made, copied out of the thread's encoder scratch. */
export function copyOut(message: ReturnType<typeof encodeForChannel>): EncodedArgs {
  const bytes = new Uint8Array((message.length + 7) & ~7); // whole words: copyTo may write the last one whole
  message.copyTo(bytes, new Int32Array(bytes.buffer), 0, 0, message.length);
  return { bytes, length: message.length, flags: message.flags };
}

export function decodeEncoded(encoded: EncodedArgs): unknown {
  return decodeFromChannel({ bytes: encoded.bytes, length: encoded.length, flags: encoded.flags });
}
