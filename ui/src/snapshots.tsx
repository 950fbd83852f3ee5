// The snapshots tab: list, create, restore, delete.

import { useEffect, useState } from 'preact/hooks';
import { call, enc } from './api';
import { Confirm } from './dialog';
import { useGet } from './hooks';
import { instances } from './store';
import { bytes, showError, when } from './util';

export function SnapshotsTab(props: { name: string }) {
  const base = `/1.0/instances/${enc(props.name)}/snapshots`;
  const [list, reload] = useGet<any[]>(`${base}?recursion=1`);
  const [newName, setNewName] = useState('');
  const [busy, setBusy] = useState(false);
  const [confirm, setConfirm] = useState<{ kind: 'restore' | 'delete'; snap: string } | null>(null);
  useEffect(
    () =>
      instances.onLifecycle((e) => {
        if ((e.source || '').startsWith(`/1.0/instances/${enc(props.name)}`)) reload();
      }),
    [props.name],
  );
  const create = async () => {
    setBusy(true);
    try {
      await call('POST', base, newName.trim() ? { name: newName.trim() } : {});
      setNewName('');
      reload();
    } catch (e) {
      showError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div>
      <form
        class="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          void create();
        }}
      >
        <input data-testid="snapshot-name" placeholder="name (default: snapN)" value={newName} onInput={(e) => setNewName(e.currentTarget.value)} />
        <button type="submit" class="primary" data-testid="snapshot-create" disabled={busy}>
          {busy ? 'Creating…' : 'Create snapshot'}
        </button>
      </form>
      <table class="list" data-testid="snapshot-list">
        <thead>
          <tr>
            <th>Name</th>
            <th>Created</th>
            <th>Expires</th>
            <th class="num">Size</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {(list || []).map((s) => (
            <tr key={s.name} data-testid="snapshot-row" data-name={s.name}>
              <td>{s.name}</td>
              <td>{when(s.created_at)}</td>
              <td>{when(s.expires_at) || 'never'}</td>
              <td class="num">{s.size > 0 ? bytes(s.size) : ''}</td>
              <td class="actions">
                <button type="button" data-testid="snapshot-restore" onClick={() => setConfirm({ kind: 'restore', snap: s.name })}>
                  Restore
                </button>
                <button type="button" class="danger" data-testid="snapshot-delete" onClick={() => setConfirm({ kind: 'delete', snap: s.name })}>
                  Delete
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {list && !list.length && <p class="empty">No snapshots.</p>}
      {confirm && (
        <Confirm
          title={confirm.kind === 'restore' ? `Restore ${confirm.snap}?` : `Delete ${confirm.snap}?`}
          text={
            confirm.kind === 'restore'
              ? `${props.name}'s files go back to snapshot ${confirm.snap}; changes since are lost.`
              : `Snapshot ${confirm.snap} of ${props.name} is deleted.`
          }
          yes={confirm.kind === 'restore' ? 'Restore' : 'Delete'}
          onClose={() => setConfirm(null)}
          onYes={async () => {
            if (confirm.kind === 'restore') await call('PUT', `/1.0/instances/${enc(props.name)}`, { restore: confirm.snap });
            else await call('DELETE', `${base}/${enc(confirm.snap)}`);
            instances.refresh(props.name);
            reload();
          }}
        />
      )}
    </div>
  );
}
