// comlink ships ESM builds without an "exports" map or .d.mts files: point
// the ESM deep imports we use at its published type declarations.
declare module "comlink/dist/esm/comlink.mjs" {
  export * from "comlink";
}
declare module "comlink/dist/esm/node-adapter.mjs" {
  import type { Endpoint } from "comlink";
  import type { MessagePort } from "node:worker_threads";
  export default function nodeEndpoint(port: MessagePort): Endpoint;
}
