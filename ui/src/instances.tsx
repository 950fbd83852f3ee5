// The instance list: live (events), filterable, with the per-instance actions.

import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { Actions } from './actions';
import { useSignal } from './hooks';
import { Launch } from './launch';
import { Link } from './link';
import { instances, type Row } from './store';
import { bytes, percent } from './util';

const started = performance.now();

function matches(r: Row, q: string): boolean {
  if (!q) return true;
  const hay = `${r.name} ${r.status} ${r.ipv4.join(' ')} ${r.image}`.toLowerCase();
  return q
    .toLowerCase()
    .split(/\s+/)
    .every((w) => hay.includes(w));
}

export function InstancesPage() {
  useEffect(() => instances.use(), []);
  const rows = useSignal(instances.rows);
  const loaded = useSignal(instances.loaded);
  const live = useSignal(instances.connected);
  const [filter, setFilter] = useState('');
  const [launching, setLaunching] = useState(false);
  const table = useRef<HTMLTableElement>(null);
  const measured = useRef(false);
  const shown = [...rows.values()].filter((r) => matches(r, filter)).sort((a, b) => a.name.localeCompare(b.name));
  // The time from the app's start to the first full list in the DOM (the test reads it).
  useLayoutEffect(() => {
    if (!loaded || measured.current || !table.current) return;
    measured.current = true;
    table.current.dataset.renderedMs = (performance.now() - started).toFixed(1);
    table.current.dataset.renderedRows = String(shown.length);
    table.current.dataset.fetchMs = instances.lastFetchMs.toFixed(1);
  }, [loaded]);
  return (
    <section>
      <div class="toolbar">
        <h1>Instances</h1>
        <input
          type="search"
          data-testid="filter"
          placeholder="Filter by name, status, address, image"
          value={filter}
          onInput={(e) => setFilter(e.currentTarget.value)}
        />
        <span class={live ? 'live on' : 'live'} data-testid="live" title="updates from /1.0/events">
          {live ? 'live' : 'offline'}
        </span>
        <button type="button" class="primary" data-testid="launch" onClick={() => setLaunching(true)}>
          Launch
        </button>
      </div>
      <table class="list" data-testid="instance-list" data-loaded={loaded ? 'true' : 'false'} ref={table}>
        <thead>
          <tr>
            <th>Name</th>
            <th>State</th>
            <th>IPv4</th>
            <th>Image</th>
            <th class="num">CPU</th>
            <th class="num">Memory</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {shown.map((r) => (
            <tr key={r.name} data-testid="instance-row" data-name={r.name}>
              <td>
                <Link to={`/ui/instances/${encodeURIComponent(r.name)}`} testid="instance-link">
                  {r.name}
                </Link>
              </td>
              <td>
                <span class={`status ${r.status.toLowerCase()}`} data-testid="status">
                  {r.status}
                </span>
              </td>
              <td>{r.ipv4.join(', ')}</td>
              <td>{r.image}</td>
              <td class="num">{percent(r.cpu)}</td>
              <td class="num">
                {bytes(r.memory)}
                {r.memory !== null && r.memoryTotal > 0 ? ` / ${bytes(r.memoryTotal)}` : ''}
              </td>
              <td>
                <Actions name={r.name} status={r.status} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {loaded && !shown.length && <p class="empty">{rows.size ? 'No instance matches the filter.' : 'No instances yet.'}</p>}
      {launching && <Launch onClose={() => setLaunching(false)} />}
    </section>
  );
}
