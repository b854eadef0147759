/**
 * Internals of the core that layers built on it need, re-exported from one
 * place (re-exports only). Each line says who needs it and why.
 */

// remote/wire.ts: messages cross machines in the core's own codec, so that a
// message's size on the wire is the size the local channel already checked
// against maxMessageBytes, and small values encode several times faster than
// with v8.serialize. Without an attacher the codec refuses SharedArrayBuffers.
export { Encoder, decode } from "./serialization.js";
