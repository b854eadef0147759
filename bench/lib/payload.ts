/**
 * The payloads of the one-way workloads, identical for every system: how
 * the sender makes message `seq` and how the receiver checks it.
 *
 * - bytes64: a 64-byte Uint8Array; bytes 0-3 carry seq (little endian),
 *   byte 63 a function of seq. The sender reuses one array (both systems
 *   copy it synchronously: postMessage clones, a channel send encodes).
 * - object: a fresh `{ id, name, values: [1, 2, 3, 4] }` per message.
 * - mib: a 1 MiB Uint8Array, filled whole before every send (seq & 255),
 *   then seq in bytes 0-3 and a function of seq in the last byte. The
 *   receiver checks length, seq, the middle byte and the last byte.
 * - kib16: a 16 KiB Uint8Array (P7, the backpressure workload), seq in
 *   bytes 0-3 and a function of seq in the last byte.
 *
 * End marker: an empty Uint8Array (byte payloads) or `{ id: -1 }`.
 * End-of-warm-up marker: a 1-byte Uint8Array or `{ id: -2 }`.
 */
export type PayloadKind = "bytes64" | "object" | "mib" | "kib16";

export interface SmallObject {
  id: number;
  name: string;
  values: number[];
}

export interface Payload {
  readonly kind: PayloadKind;
  /** Payload bytes per message (for MB/s); for objects, the JSON length. */
  readonly bytes: number;
  /** Message `seq` (may reuse and return the same array). */
  make(seq: number): unknown;
  /** True when `value` is exactly message `seq`. */
  check(value: unknown, seq: number): boolean;
  readonly end: unknown;
  isEnd(value: unknown): boolean;
  readonly warmEnd: unknown;
  isWarmEnd(value: unknown): boolean;
}

function lastByte(seq: number): number {
  return (seq * 31 + 7) & 255;
}

function bytesPayload(kind: PayloadKind, size: number, fillWhole: boolean): Payload {
  const buffer = new Uint8Array(size);
  const mid = size >> 1;
  return {
    kind,
    bytes: size,
    make(seq) {
      if (fillWhole) buffer.fill(seq & 255);
      buffer[0] = seq & 255;
      buffer[1] = (seq >>> 8) & 255;
      buffer[2] = (seq >>> 16) & 255;
      buffer[3] = (seq >>> 24) & 255;
      buffer[size - 1] = lastByte(seq);
      return buffer;
    },
    check(value, seq) {
      if (!(value instanceof Uint8Array) || value.length !== size) return false;
      const got = (value[0]! | (value[1]! << 8) | (value[2]! << 16) | (value[3]! << 24)) >>> 0;
      if (got !== seq >>> 0 || value[size - 1] !== lastByte(seq)) return false;
      return !fillWhole || value[mid] === (seq & 255);
    },
    end: new Uint8Array(0),
    isEnd(value) {
      return value instanceof Uint8Array && value.length === 0;
    },
    warmEnd: new Uint8Array(1),
    isWarmEnd(value) {
      return value instanceof Uint8Array && value.length === 1;
    },
  };
}

export function payloadFor(kind: PayloadKind): Payload {
  switch (kind) {
    case "bytes64":
      return bytesPayload(kind, 64, false);
    case "kib16":
      return bytesPayload(kind, 16 * 1024, false);
    case "mib":
      return bytesPayload(kind, 1024 * 1024, true);
    case "object":
      return {
        kind,
        bytes: JSON.stringify({ id: 100000, name: "abc", values: [1, 2, 3, 4] }).length,
        make(seq) {
          return { id: seq, name: "abc", values: [1, 2, 3, 4] } satisfies SmallObject;
        },
        check(value, seq) {
          const v = value as SmallObject;
          return v !== null && typeof v === "object" && v.id === seq && v.name === "abc" && v.values.length === 4 && v.values[3] === 4;
        },
        end: { id: -1, name: "end", values: [] },
        isEnd(value) {
          return (value as SmallObject | null)?.id === -1;
        },
        warmEnd: { id: -2, name: "warm", values: [] },
        isWarmEnd(value) {
          return (value as SmallObject | null)?.id === -2;
        },
      };
  }
}

/** Messages per clock check in a time-bounded send loop. */
export function batchFor(kind: PayloadKind): number {
  return kind === "mib" ? 1 : kind === "kib16" ? 16 : 256;
}
