// Live CPU, memory and network graphs of the last 15 minutes, sampled from
// `/1.0/instances/NAME/state` every 2 s. Samples stay in memory while the page is open
// (per instance, so leaving a tab and coming back keeps the history).

import { useEffect, useRef, useState } from 'preact/hooks';
import { enc, get } from './api';
import { bytes, percent } from './util';

const WINDOW_MS = 15 * 60 * 1000;
const PERIOD_MS = 2000;

interface Point {
  at: number;
  cpu: number | null;
  memory: number;
  rx: number | null;
  tx: number | null;
}

interface Raw {
  at: number;
  cpu: number;
  rx: number;
  tx: number;
}

const history = new Map<string, { points: Point[]; last: Raw | null }>();

function sample(name: string, st: any) {
  const h = history.get(name) ?? { points: [], last: null };
  history.set(name, h);
  const at = Date.now();
  let rx = 0;
  let tx = 0;
  for (const [iface, n] of Object.entries<any>(st.network || {})) {
    if (iface === 'lo') continue;
    rx += n?.counters?.bytes_received || 0;
    tx += n?.counters?.bytes_sent || 0;
  }
  const raw: Raw = { at, cpu: st.cpu?.usage || 0, rx, tx };
  const prev = h.last;
  const dt = prev ? (at - prev.at) / 1000 : 0;
  const ok = prev && dt > 0 && st.status === 'Running' && raw.cpu >= prev.cpu;
  h.points.push({
    at,
    cpu: ok && prev ? ((raw.cpu - prev.cpu) / (dt * 1e9)) * 100 : null,
    memory: st.memory?.usage || 0,
    rx: ok && prev && raw.rx >= prev.rx ? (raw.rx - prev.rx) / dt : null,
    tx: ok && prev && raw.tx >= prev.tx ? (raw.tx - prev.tx) / dt : null,
  });
  h.last = raw;
  while (h.points.length && h.points[0].at < at - WINDOW_MS) h.points.shift();
}

function Chart(props: { title: string; points: Point[]; series: { key: keyof Point; label: string; cls: string }[]; format: (v: number) => string; testid: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    const c = canvas.current;
    if (!c) return;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth;
    const h = c.clientHeight;
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
    const g = c.getContext('2d');
    if (!g) return;
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, h);
    const now = Date.now();
    let max = 0;
    for (const p of props.points) for (const s of props.series) max = Math.max(max, (p[s.key] as number | null) ?? 0);
    max = max > 0 ? max * 1.15 : 1;
    const style = getComputedStyle(c);
    g.strokeStyle = style.getPropertyValue('--grid') || '#ddd';
    g.lineWidth = 1;
    for (let i = 1; i < 4; i++) {
      const y = Math.round((h * i) / 4) + 0.5;
      g.beginPath();
      g.moveTo(0, y);
      g.lineTo(w, y);
      g.stroke();
    }
    g.fillStyle = style.color;
    g.font = '11px sans-serif';
    g.fillText(props.format(max), 4, 12);
    for (const s of props.series) {
      g.strokeStyle = style.getPropertyValue(`--${s.cls}`) || '#06c';
      g.lineWidth = 1.5;
      g.beginPath();
      let pen = false;
      for (const p of props.points) {
        const v = p[s.key] as number | null;
        if (v === null) {
          pen = false;
          continue;
        }
        const x = w - ((now - p.at) / WINDOW_MS) * w;
        const y = h - (v / max) * (h - 4);
        if (pen) g.lineTo(x, y);
        else g.moveTo(x, y);
        pen = true;
      }
      g.stroke();
    }
  });
  const last = props.points[props.points.length - 1];
  return (
    <figure class="chart" data-testid={props.testid}>
      <figcaption>
        {props.title}
        {props.series.map((s) => {
          const v = last ? (last[s.key] as number | null) : null;
          return (
            <span class={`legend ${s.cls}`}>
              {s.label} {v === null ? '–' : props.format(v)}
            </span>
          );
        })}
      </figcaption>
      <canvas ref={canvas} />
    </figure>
  );
}

export function Graphs(props: { name: string }) {
  const [, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    const take = async () => {
      try {
        const st = await get(`/1.0/instances/${enc(props.name)}/state`);
        if (!live) return;
        sample(props.name, st);
        setTick((t) => t + 1);
      } catch {
        // The instance page shows errors of its own; a missed sample is a gap.
      }
    };
    void take();
    const timer = setInterval(take, PERIOD_MS);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, [props.name]);
  const points = history.get(props.name)?.points ?? [];
  return (
    <div class="charts">
      <Chart title="CPU" testid="graph-cpu" points={points} series={[{ key: 'cpu', label: '', cls: 'cpu' }]} format={percent} />
      <Chart title="Memory" testid="graph-memory" points={points} series={[{ key: 'memory', label: '', cls: 'mem' }]} format={bytes} />
      <Chart
        title="Network"
        testid="graph-network"
        points={points}
        series={[
          { key: 'rx', label: 'in', cls: 'rx' },
          { key: 'tx', label: 'out', cls: 'tx' },
        ]}
        format={(v) => `${bytes(v)}/s`}
      />
    </div>
  );
}
