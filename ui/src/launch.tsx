// The launch dialog: image, name, profiles, CPU and memory limits.

import { useState } from 'preact/hooks';
import { call } from './api';
import { Modal, useAction } from './dialog';
import { useGet } from './hooks';
import { instances } from './store';

export function Launch(props: { onClose: () => void }) {
  const [images] = useGet<any[]>('/1.0/images?recursion=1');
  const [profiles] = useGet<any[]>('/1.0/profiles?recursion=1');
  const [image, setImage] = useState('');
  const [name, setName] = useState('');
  const [chosen, setChosen] = useState<string[]>(['default']);
  const [cpu, setCpu] = useState('');
  const [memory, setMemory] = useState('');
  const [start, setStart] = useState(true);
  const [busy, error, run] = useAction();
  const choices: { value: string; label: string }[] = [];
  for (const img of images || []) {
    const aliases: string[] = (img.aliases || []).map((a: any) => a.name);
    const desc = img.properties?.description || '';
    for (const a of aliases) choices.push({ value: `alias:${a}`, label: desc ? `${a} (${desc})` : a });
    if (!aliases.length) choices.push({ value: `fp:${img.fingerprint}`, label: `${img.fingerprint.slice(0, 12)} ${desc}` });
  }
  const selected = image || choices[0]?.value || 'alias:busybox';
  const submit = () =>
    run(async () => {
      const [kind, ref] = [selected.slice(0, selected.indexOf(':')), selected.slice(selected.indexOf(':') + 1)];
      const config: Record<string, string> = {};
      if (cpu.trim()) config['limits.cpu'] = cpu.trim();
      if (memory.trim()) config['limits.memory'] = memory.trim();
      const body: any = {
        source: kind === 'alias' ? { type: 'image', alias: ref } : { type: 'image', fingerprint: ref },
        profiles: chosen,
        config,
        start,
      };
      if (name.trim()) body.name = name.trim();
      const result = await call('POST', '/1.0/instances', body);
      void result;
      void instances.load();
      props.onClose();
    });
  return (
    <Modal title="Launch an instance" onClose={props.onClose} testid="launch-dialog">
      <form
        class="form"
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <label>
          Image
          <select data-testid="launch-image" value={selected} onChange={(e) => setImage(e.currentTarget.value)}>
            {choices.map((c) => (
              <option value={c.value}>{c.label}</option>
            ))}
            {!choices.length && <option value="alias:busybox">busybox</option>}
          </select>
        </label>
        <label>
          Name
          <input data-testid="launch-name" value={name} placeholder="random" onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <fieldset>
          <legend>Profiles</legend>
          {(profiles || [{ name: 'default' }]).map((p: any) => (
            <label class="check">
              <input
                type="checkbox"
                data-testid={`launch-profile-${p.name}`}
                checked={chosen.includes(p.name)}
                onChange={(e) => setChosen(e.currentTarget.checked ? [...chosen, p.name] : chosen.filter((x) => x !== p.name))}
              />
              {p.name}
            </label>
          ))}
        </fieldset>
        <label>
          CPU limit
          <input data-testid="launch-cpu" value={cpu} placeholder="e.g. 1 or 0-1" onInput={(e) => setCpu(e.currentTarget.value)} />
        </label>
        <label>
          Memory limit
          <input data-testid="launch-memory" value={memory} placeholder="e.g. 256MiB" onInput={(e) => setMemory(e.currentTarget.value)} />
        </label>
        <label class="check">
          <input type="checkbox" data-testid="launch-start" checked={start} onChange={(e) => setStart(e.currentTarget.checked)} />
          Start it
        </label>
        {error && (
          <p class="error" data-testid="dialog-error">
            {error}
          </p>
        )}
        <div class="buttons">
          <button type="button" onClick={props.onClose} disabled={busy}>
            Cancel
          </button>
          <button type="submit" class="primary" data-testid="launch-submit" disabled={busy}>
            {busy ? 'Launching…' : 'Launch'}
          </button>
        </div>
      </form>
    </Modal>
  );
}
