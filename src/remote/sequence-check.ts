/**
 * The per-sender sequence check of one receiving process: suppresses a
 * message this process has already handed to a local receiver, and counts
 * messages that arrive out of their sender's order.
 *
 * Every sender numbers its messages 1, 2, 3, ... (wire.ts). A receiving
 * process sees a subsequence of each sender's messages (other processes
 * take the rest), in increasing order unless a message was redelivered. A
 * duplicate reaches this check when the broker delivers a message again
 * (an acknowledgement lost or late, a receiver that died) or stored it twice
 * (a publish retried after a broker restart, whose de-duplication window
 * forgets messages already consumed): either way the same (sender, seq).
 *
 * Per sender it keeps the highest seq delivered and the set of seqs
 * delivered within WINDOW below it. A seq older than that window is
 * accepted (at-least-once wins over suppressing what cannot be checked).
 * Senders not heard from in a long while are forgotten, oldest first,
 * beyond MAX_SENDERS.
 */

/** How far below a sender's highest delivered seq duplicates are still recognised. */
export const WINDOW = 1 << 16;
const MAX_SENDERS = 4096;

interface SenderRecord {
  high: number;
  delivered: Set<number>;
}

export class SequenceCheck {
  readonly #senders = new Map<string, SenderRecord>();
  /** Messages suppressed because this process had delivered them already. */
  duplicates = 0;
  /** Messages delivered below a seq of the same sender delivered earlier (only after a redelivery). */
  outOfOrder = 0;

  /** True when message `seq` of `sender` was already handed to a local receiver (counted as a duplicate). */
  isDuplicate(sender: string, seq: number): boolean {
    if (this.#senders.get(sender)?.delivered.has(seq)) {
      this.duplicates++;
      return true;
    }
    return false;
  }

  /** Records that message `seq` of `sender` was handed to a local receiver. */
  delivered(sender: string, seq: number): void {
    let record = this.#senders.get(sender);
    if (record === undefined) {
      record = { high: 0, delivered: new Set() };
      if (this.#senders.size >= MAX_SENDERS) this.#senders.delete(this.#senders.keys().next().value!);
    } else {
      // Map order is insertion order: re-inserting keeps the most recently heard senders last.
      this.#senders.delete(sender);
    }
    this.#senders.set(sender, record);
    if (seq < record.high) this.outOfOrder++;
    else record.high = seq;
    record.delivered.add(seq);
    if (record.delivered.size > 2 * WINDOW) prune(record);
  }
}

function prune(record: SenderRecord): void {
  const floor = record.high - WINDOW;
  for (const seq of record.delivered) if (seq < floor) record.delivered.delete(seq);
}
