// The actions on one instance (start, stop, force stop, restart, freeze, rename, delete),
// shared by the list and the instance page.

import { useState } from 'preact/hooks';
import { call, enc } from './api';
import { Confirm, Prompt } from './dialog';
import { instances } from './store';
import { navigate, showError } from './util';

/** The status an action leaves behind when its operation succeeded. */
const AFTER: Record<string, string> = { start: 'Running', stop: 'Stopped', restart: 'Running', freeze: 'Frozen', unfreeze: 'Running' };

async function setState(name: string, action: string, force = false) {
  await call('PUT', `/1.0/instances/${enc(name)}/state`, { action, force, timeout: force ? -1 : 30 });
  // Shown at once; the fetch that follows fills in the rest (addresses, memory).
  instances.setStatus(name, AFTER[action]);
  instances.refresh(name);
}

export function Actions(props: { name: string; status: string; afterDelete?: () => void }) {
  const { name, status } = props;
  const [busy, setBusy] = useState(false);
  const [dialog, setDialog] = useState<'delete' | 'rename' | null>(null);
  const run = async (f: () => Promise<void>) => {
    setBusy(true);
    try {
      await f();
    } catch (e) {
      showError(e);
    } finally {
      setBusy(false);
    }
  };
  const running = status === 'Running';
  const frozen = status === 'Frozen';
  const stopped = status === 'Stopped';
  const button = (id: string, label: string, enabled: boolean, f: () => Promise<void>, cls = '') => (
    <button type="button" class={cls} data-testid={`action-${id}`} disabled={busy || !enabled} onClick={() => run(f)}>
      {label}
    </button>
  );
  return (
    <span class="actions">
      {button('start', 'Start', stopped, () => setState(name, 'start'))}
      {button('stop', 'Stop', running || frozen, () => setState(name, 'stop'))}
      {button('force-stop', 'Force stop', running || frozen, () => setState(name, 'stop', true))}
      {button('restart', 'Restart', running, () => setState(name, 'restart'))}
      {frozen
        ? button('unfreeze', 'Unfreeze', true, () => setState(name, 'unfreeze'))
        : button('freeze', 'Freeze', running, () => setState(name, 'freeze'))}
      <button type="button" data-testid="action-rename" disabled={busy || !stopped} onClick={() => setDialog('rename')} title={stopped ? '' : 'stop it first'}>
        Rename
      </button>
      <button type="button" class="danger" data-testid="action-delete" disabled={busy} onClick={() => setDialog('delete')}>
        Delete
      </button>
      {dialog === 'delete' && (
        <Confirm
          title={`Delete ${name}?`}
          text={running || frozen ? `${name} is ${status.toLowerCase()}: it is stopped, then deleted with its snapshots.` : `${name} is deleted with its snapshots.`}
          yes="Delete"
          onClose={() => setDialog(null)}
          onYes={async () => {
            if (!stopped) await call('PUT', `/1.0/instances/${enc(name)}/state`, { action: 'stop', force: true });
            await call('DELETE', `/1.0/instances/${enc(name)}`);
            instances.remove(name);
            props.afterDelete?.();
          }}
        />
      )}
      {dialog === 'rename' && (
        <Prompt
          title={`Rename ${name}`}
          label="New name"
          initial={name}
          ok="Rename"
          onClose={() => setDialog(null)}
          onOk={async (to) => {
            await call('POST', `/1.0/instances/${enc(name)}`, { name: to });
            instances.remove(name);
            instances.refresh(to);
            if (props.afterDelete) navigate(`/ui/instances/${enc(to)}`);
          }}
        />
      )}
    </span>
  );
}
