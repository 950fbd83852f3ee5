// The instance list, kept live: one full load, then `/1.0/events` (lifecycle) refreshes only
// the instances an event names, and a slow poll keeps CPU and memory figures current.

import { ApiError, enc, get, socket } from './api';
import { Signal, showError } from './util';

export interface Row {
  name: string;
  status: string;
  ipv4: string[];
  image: string;
  /** CPU use since the previous sample, in percent of one CPU; null before two samples. */
  cpu: number | null;
  memory: number | null;
  /** What it may use (`memory.total`: its limit, else the host's memory); 0 when unknown. */
  memoryTotal: number;
  memoryLimit: string;
  profiles: string[];
  config: Record<string, string>;
}

interface Sample {
  at: number;
  usage: number;
}

const samples = new Map<string, Sample>();

function toRow(full: any, at: number): Row {
  const cfg: Record<string, string> = full.expanded_config || full.config || {};
  const st = full.state;
  const ipv4: string[] = [];
  for (const [iface, net] of Object.entries<any>(st?.network || {})) {
    if (iface === 'lo' || net?.type === 'loopback') continue;
    for (const a of net?.addresses || []) {
      if (a.family === 'inet' && a.scope !== 'link') ipv4.push(`${a.address} (${iface})`);
    }
  }
  let cpu: number | null = null;
  const usage = st?.cpu?.usage;
  const running = full.status === 'Running';
  if (running && typeof usage === 'number') {
    const prev = samples.get(full.name);
    if (prev && at > prev.at && usage >= prev.usage) {
      cpu = ((usage - prev.usage) / ((at - prev.at) * 1e6)) * 100;
    }
    samples.set(full.name, { at, usage });
  } else {
    samples.delete(full.name);
  }
  const image =
    cfg['image.description'] ||
    [cfg['image.os'], cfg['image.release']].filter(Boolean).join(' ') ||
    (cfg['volatile.base_image'] || '').slice(0, 12);
  return {
    name: full.name,
    status: full.status,
    ipv4,
    image,
    cpu,
    memory: running ? (st?.memory?.usage ?? null) : null,
    memoryTotal: running ? st?.memory?.total || 0 : 0,
    memoryLimit: cfg['limits.memory'] || '',
    profiles: full.profiles || [],
    config: cfg,
  };
}

export type LifecycleEvent = { action: string; source: string; name?: string; context?: Record<string, any> };

export class InstanceStore {
  readonly rows = new Signal<Map<string, Row>>(new Map());
  readonly loaded = new Signal<boolean>(false);
  readonly connected = new Signal<boolean>(false);
  private readonly lifecycle = new Set<(e: LifecycleEvent) => void>();
  private ws: WebSocket | null = null;
  private pending = new Set<string>();
  private flushTimer = 0;
  private poll = 0;
  private users = 0;
  private closed = false;
  /** How long the last full list took to arrive (ms). */
  lastFetchMs = 0;

  /** Start (or keep) the live list; returns a function to release it. */
  use(): () => void {
    this.users++;
    if (this.users === 1) {
      this.closed = false;
      this.connect();
      void this.load();
      this.poll = window.setInterval(() => void this.load(), 5000);
    }
    return () => {
      this.users--;
      if (this.users === 0) {
        this.closed = true;
        clearInterval(this.poll);
        this.ws?.close();
        this.ws = null;
      }
    };
  }

  /** Listen to lifecycle events (any resource). */
  onLifecycle(f: (e: LifecycleEvent) => void): () => void {
    this.lifecycle.add(f);
    return () => this.lifecycle.delete(f);
  }

  async load() {
    try {
      const at = performance.now();
      const list = await get<any[]>('/1.0/instances?recursion=2');
      this.lastFetchMs = performance.now() - at;
      const rows = new Map<string, Row>();
      for (const full of list) rows.set(full.name, toRow(full, at));
      this.rows.set(rows);
      this.loaded.set(true);
    } catch (e) {
      showError(e);
    }
  }

  /** Fetch one instance again (after an event or an action). */
  refresh(name: string) {
    this.pending.add(name);
    if (!this.flushTimer) this.flushTimer = window.setTimeout(() => void this.flush(), 30);
  }

  private async flush() {
    this.flushTimer = 0;
    const names = [...this.pending];
    this.pending.clear();
    await Promise.all(
      names.map(async (name) => {
        try {
          const full = await get(`/1.0/instances/${enc(name)}?recursion=1`);
          const rows = new Map(this.rows.value);
          rows.set(name, toRow(full, performance.now()));
          this.rows.set(rows);
        } catch (e) {
          if (e instanceof ApiError && e.status === 404) this.remove(name);
          // Busy (being created, deleted or restored): its next event or the poll says more.
          else if (e instanceof ApiError && e.status === 409) return;
          else showError(e);
        }
      }),
    );
  }

  /** What a finished action says about an instance before its next fetch does. */
  setStatus(name: string, status: string) {
    const row = this.rows.value.get(name);
    if (!row || row.status === status) return;
    const rows = new Map(this.rows.value);
    rows.set(name, { ...row, status });
    this.rows.set(rows);
  }

  remove(name: string) {
    if (!this.rows.value.has(name)) return;
    const rows = new Map(this.rows.value);
    rows.delete(name);
    samples.delete(name);
    this.rows.set(rows);
  }

  private connect() {
    if (this.closed) return;
    const ws = socket('/1.0/events?type=lifecycle');
    this.ws = ws;
    ws.onopen = () => {
      this.connected.set(true);
      // Whatever happened while we were away.
      void this.load();
    };
    ws.onmessage = (m) => {
      if (typeof m.data !== 'string') return;
      let ev: any;
      try {
        ev = JSON.parse(m.data);
      } catch {
        return;
      }
      if (ev.type !== 'lifecycle') return;
      const md: LifecycleEvent = ev.metadata || {};
      for (const f of this.lifecycle) f(md);
      const match = /^\/1\.0\/instances\/([^/?]+)/.exec(md.source || '');
      if (!match) return;
      const name = decodeURIComponent(match[1]);
      if (md.action === 'instance-deleted') this.remove(name);
      else this.refresh(name);
      const old = md.context?.old_name;
      if (md.action === 'instance-renamed' && typeof old === 'string') this.remove(old);
    };
    ws.onclose = () => {
      this.connected.set(false);
      if (this.ws === ws && !this.closed) setTimeout(() => this.connect(), 2000);
    };
  }
}

export const instances = new InstanceStore();
