// Modal dialogs: a confirmation and a one-field prompt.

import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';

export function Modal(props: { title: string; onClose: () => void; children: ComponentChildren; testid?: string }) {
  return (
    <div class="overlay" onClick={(e) => e.target === e.currentTarget && props.onClose()}>
      <div class="modal" role="dialog" aria-label={props.title} data-testid={props.testid}>
        <h2>{props.title}</h2>
        {props.children}
      </div>
    </div>
  );
}

/** Run `action`; while it runs the buttons are disabled; its error is shown in the dialog. */
export function useAction(): [boolean, string, (f: () => Promise<void>) => Promise<void>] {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  const run = async (f: () => Promise<void>) => {
    setBusy(true);
    setError('');
    try {
      await f();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  };
  return [busy, error, run];
}

export function Confirm(props: { title: string; text: string; yes: string; onYes: () => Promise<void>; onClose: () => void }) {
  const [busy, error, run] = useAction();
  return (
    <Modal title={props.title} onClose={props.onClose} testid="confirm-dialog">
      <p>{props.text}</p>
      {error && <p class="error" data-testid="dialog-error">{error}</p>}
      <div class="buttons">
        <button type="button" onClick={props.onClose} disabled={busy}>
          Cancel
        </button>
        <button
          type="button"
          class="danger"
          data-testid="confirm-yes"
          disabled={busy}
          onClick={() =>
            run(async () => {
              await props.onYes();
              props.onClose();
            })
          }
        >
          {props.yes}
        </button>
      </div>
    </Modal>
  );
}

export function Prompt(props: { title: string; label: string; initial: string; ok: string; onOk: (v: string) => Promise<void>; onClose: () => void }) {
  const [value, setValue] = useState(props.initial);
  const [busy, error, run] = useAction();
  return (
    <Modal title={props.title} onClose={props.onClose} testid="prompt-dialog">
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void run(async () => {
            await props.onOk(value.trim());
            props.onClose();
          });
        }}
      >
        <label>
          {props.label}
          <input data-testid="prompt-input" value={value} autoFocus onInput={(e) => setValue(e.currentTarget.value)} />
        </label>
        {error && <p class="error" data-testid="dialog-error">{error}</p>}
        <div class="buttons">
          <button type="button" onClick={props.onClose} disabled={busy}>
            Cancel
          </button>
          <button type="submit" data-testid="prompt-ok" disabled={busy || !value.trim()}>
            {props.ok}
          </button>
        </div>
      </form>
    </Modal>
  );
}
