// One instance: overview with live graphs, terminal, console, snapshots.

import { useEffect } from 'preact/hooks';
import { Actions } from './actions';
import { Graphs } from './graphs';
import { useSignal } from './hooks';
import { Link } from './link';
import { ConsoleTab, TerminalTab } from './session';
import { SnapshotsTab } from './snapshots';
import { instances } from './store';
import { bytes, navigate, percent } from './util';

const TABS = [
  ['overview', 'Overview'],
  ['terminal', 'Terminal'],
  ['console', 'Console'],
  ['snapshots', 'Snapshots'],
] as const;

export function InstancePage(props: { name: string; tab: string }) {
  const { name } = props;
  useEffect(() => instances.use(), []);
  useEffect(() => instances.refresh(name), [name]);
  const rows = useSignal(instances.rows);
  const loaded = useSignal(instances.loaded);
  const row = rows.get(name);
  const base = `/ui/instances/${encodeURIComponent(name)}`;
  const tab = TABS.some(([t]) => t === props.tab) ? props.tab : 'overview';
  if (!row) {
    return (
      <section>
        <h1>{name}</h1>
        <p class="empty">{loaded ? 'No such instance.' : 'Loading…'}</p>
        <Link to="/ui/">Back to the list</Link>
      </section>
    );
  }
  return (
    <section>
      <div class="toolbar">
        <h1 data-testid="instance-name">{name}</h1>
        <span class={`status ${row.status.toLowerCase()}`} data-testid="instance-status">
          {row.status}
        </span>
        <Actions name={name} status={row.status} afterDelete={() => navigate('/ui/')} />
      </div>
      <nav class="tabs">
        {TABS.map(([t, label]) => (
          <Link to={`${base}/${t}`} class={t === tab ? 'active' : ''} testid={`tab-${t}`}>
            {label}
          </Link>
        ))}
      </nav>
      {tab === 'overview' && (
        <div>
          <dl class="facts">
            <dt>Image</dt>
            <dd>{row.image}</dd>
            <dt>IPv4</dt>
            <dd>{row.ipv4.join(', ') || '–'}</dd>
            <dt>Profiles</dt>
            <dd>{row.profiles.join(', ')}</dd>
            <dt>CPU</dt>
            <dd>
              {percent(row.cpu) || '–'}
              {row.config['limits.cpu'] ? ` (limit ${row.config['limits.cpu']})` : ''}
            </dd>
            <dt>Memory</dt>
            <dd>
              {bytes(row.memory) || '–'}
              {row.memoryLimit ? ` (limit ${row.memoryLimit})` : ''}
            </dd>
          </dl>
          <Graphs name={name} />
        </div>
      )}
      {tab === 'terminal' &&
        (row.status === 'Running' ? <TerminalTab key={name} name={name} status={row.status} /> : <p class="empty">Start {name} to open a terminal.</p>)}
      {tab === 'console' && (row.status === 'Running' ? <ConsoleTab key={name} name={name} /> : <p class="empty">Start {name} to attach to its console.</p>)}
      {tab === 'snapshots' && <SnapshotsTab key={name} name={name} />}
    </section>
  );
}
