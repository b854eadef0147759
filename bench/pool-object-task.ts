/**
 * The tiny task of `npm run bench:pool --payload object`: a small object in,
 * a small object out (the shape of bench/lib/payload.ts's P2 object), so
 * that arguments and results take the codec path instead of the pool's
 * path for primitives. Imported by every system's threads.
 */
export interface Item {
  id: number;
  name: string;
  values: number[];
}

export function objectTask(item: Item): Item {
  return { id: item.id * 2 + 1, name: item.name, values: item.values.map((v) => v + 1) };
}

export default objectTask;

export function makeItem(x: number): Item {
  return { id: x, name: "item", values: [x, x + 1, x + 2, x + 3] };
}

export function checkItem(x: number, out: Item): boolean {
  return out.id === x * 2 + 1 && out.name === "item" && out.values.length === 4 && out.values.every((v, i) => v === x + i + 1);
}
