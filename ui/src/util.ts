// Small formatting helpers and the app's shared signals (errors, navigation).

export function bytes(n: number | undefined | null): string {
  if (n === undefined || n === null || !Number.isFinite(n)) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

export function percent(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '';
  return `${n.toFixed(n < 10 ? 1 : 0)} %`;
}

export function when(iso: string | undefined): string {
  if (!iso || iso.startsWith('0001-')) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

type Listener<T> = (v: T) => void;

/** A value with listeners (the app's few pieces of global state). */
export class Signal<T> {
  private listeners = new Set<Listener<T>>();
  constructor(public value: T) {}
  set(v: T) {
    this.value = v;
    for (const l of this.listeners) l(v);
  }
  subscribe(l: Listener<T>): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}

/** The error shown at the top of the page (API error text, as the server wrote it). */
export const errorText = new Signal<string>('');

export function showError(e: unknown) {
  errorText.set(e instanceof Error ? e.message : String(e));
}

/** The in-app path (below /ui). */
export const route = new Signal<string>(location.pathname);

export function navigate(to: string) {
  if (to !== location.pathname) history.pushState(null, '', to);
  route.set(to);
}

addEventListener('popstate', () => route.set(location.pathname));
