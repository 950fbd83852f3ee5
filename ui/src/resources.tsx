// Images, networks, profiles and operations: read-only lists.

import { useEffect, useState } from 'preact/hooks';
import { call, enc } from './api';
import { useGet } from './hooks';
import { instances } from './store';
import { bytes, showError, when } from './util';

function Table(props: { testid: string; head: string[]; rows: (string | number)[][] | undefined }) {
  return (
    <table class="list" data-testid={props.testid}>
      <thead>
        <tr>
          {props.head.map((h) => (
            <th>{h}</th>
          ))}
        </tr>
      </thead>
      <tbody>
        {(props.rows || []).map((r) => (
          <tr>
            {r.map((c) => (
              <td>{c}</td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function ImagesPage() {
  const [images] = useGet<any[]>('/1.0/images?recursion=1');
  return (
    <section>
      <h1>Images</h1>
      <Table
        testid="image-list"
        head={['Aliases', 'Fingerprint', 'Description', 'Architecture', 'Size', 'Uploaded']}
        rows={images?.map((i) => [
          (i.aliases || []).map((a: any) => a.name).join(', '),
          String(i.fingerprint).slice(0, 12),
          i.properties?.description || '',
          i.architecture || '',
          bytes(i.size),
          when(i.uploaded_at),
        ])}
      />
    </section>
  );
}

export function NetworksPage() {
  const [networks] = useGet<any[]>('/1.0/networks?recursion=1');
  return (
    <section>
      <h1>Networks</h1>
      <Table
        testid="network-list"
        head={['Name', 'Type', 'Managed', 'IPv4', 'IPv6', 'Used by']}
        rows={networks?.map((n) => [
          n.name,
          n.type,
          n.managed ? 'yes' : 'no',
          n.config?.['ipv4.address'] || '',
          n.config?.['ipv6.address'] || '',
          (n.used_by || []).length,
        ])}
      />
    </section>
  );
}

export function ProfilesPage() {
  const [profiles] = useGet<any[]>('/1.0/profiles?recursion=1');
  return (
    <section>
      <h1>Profiles</h1>
      <Table
        testid="profile-list"
        head={['Name', 'Description', 'Config', 'Devices', 'Used by']}
        rows={profiles?.map((p) => [
          p.name,
          p.description || '',
          Object.entries(p.config || {})
            .map(([k, v]) => `${k}=${v}`)
            .join(' '),
          Object.keys(p.devices || {}).join(', '),
          (p.used_by || []).length,
        ])}
      />
    </section>
  );
}

export function OperationsPage() {
  const [tick, setTick] = useState(0);
  const [ops] = useGet<Record<string, any[]>>('/1.0/operations?recursion=1', tick);
  useEffect(() => {
    const t = setInterval(() => setTick((n) => n + 1), 2000);
    const off = instances.onLifecycle(() => setTick((n) => n + 1));
    return () => {
      clearInterval(t);
      off();
    };
  }, []);
  const all = Object.values(ops || {})
    .flat()
    .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  return (
    <section>
      <h1>Operations</h1>
      <table class="list" data-testid="operation-list">
        <thead>
          <tr>
            <th>Created</th>
            <th>Description</th>
            <th>Status</th>
            <th>Resources</th>
            <th>Error</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {all.map((op) => (
            <tr key={op.id}>
              <td>{when(op.created_at)}</td>
              <td>{op.description}</td>
              <td>{op.status}</td>
              <td>{Object.values<string[]>(op.resources || {}).flat().join(', ')}</td>
              <td class="error">{op.err}</td>
              <td>
                {op.may_cancel && op.status === 'Running' && (
                  <button
                    type="button"
                    onClick={() =>
                      call('DELETE', `/1.0/operations/${enc(op.id)}`)
                        .then(() => setTick((n) => n + 1))
                        .catch(showError)
                    }
                  >
                    Cancel
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {ops && !all.length && <p class="empty">No operations.</p>}
    </section>
  );
}
