/** The tiny task the pools run (piscina and tinypool import this file in their workers). */
import { task } from "./interp-side.js";

export default function poolTask(x: number): number {
  return task(x);
}
